#!/usr/bin/env bash
# Loopback benchmark of loadmesh against the bare backend and HAProxy;
# `make bench` runs it. It installs wrk, HAProxy and perf with apt-get
# when they are missing and it can, builds loadmesh with its symbol table
# (for perf) and test/bench/cmd/lmbench, and runs lmbench, which prints
# the table and rewrites the generated section of docs/benchmarks.md.
#
# Environment (all optional):
#   BENCH_ROUNDS=5        interleaved rounds per row (medians are reported)
#   BENCH_DURATION=5s     length of one load run
#   BENCH_CONNS=64,8      connection counts, the same for every row
#   BENCH_BULK_SIZE=1073741824   bytes per large transfer (0 skips them)
#   BENCH_LOADGEN=auto    auto (wrk if installed, else loadmesh loadtest), wrk, loadtest or go
#   BENCH_PROFILE=true    perf profile of both agents during a two-hop run
#   BENCH_DOC=docs/benchmarks.md   where results go ("" for nowhere)
#   BENCH_INSTALL=1       0: never run apt-get
#   BENCH_KEEP=0          1: keep the scratch directory (logs, perf data)
#   BENCH_REACT_DOC=docs/autoscaling.md   where reactbench's results go ("" for nowhere)
#   BENCH_REACT_ARGS=     more flags for reactbench (make bench-autoscale runs it alone)
#   BENCH_TCP_DOC=docs/benchmarks.md   where tcpbench's results go ("" for nowhere)
#   BENCH_TCP_ARGS=       more flags for tcpbench (test/bench/cmd/tcpbench -h)
#
# `run.sh tcp` (make bench-tcp) runs only tcpbench: loadmesh's TCP
# services against HAProxy in mode tcp, about 3 minutes; it installs only
# HAProxy.
set -euo pipefail

only=${1:-all}
case $only in
all | tcp) ;;
*)
	echo "usage: $0 [tcp]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/../.."
root=$PWD

work=$(mktemp -d /tmp/loadmesh-bench.XXXXXX)
pidfile=$work/pids
lmpid=""

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [[ -n $lmpid ]] && kill -0 "$lmpid" 2>/dev/null; then
		kill -TERM "$lmpid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$lmpid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$lmpid" 2>/dev/null || true
	fi
	# lmbench stops what it started; this catches leftovers should it
	# have been killed itself. Only PIDs that it recorded are touched.
	if [[ -f $pidfile ]]; then
		while read -r pid; do
			[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
		done <"$pidfile"
	fi
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		echo "kept $work (logs, configs, perf data)"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

log() { printf '== %s\n' "$*"; }

# --- tools -----------------------------------------------------------
install_pkgs() {
	[[ ${BENCH_INSTALL:-1} == 1 ]] || return 0
	[[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 0
	local missing=()
	[[ $only == tcp ]] || command -v wrk >/dev/null || missing+=(wrk)
	command -v haproxy >/dev/null || missing+=(haproxy)
	if [[ $only != tcp && ${BENCH_PROFILE:-true} == true ]] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
	((${#missing[@]})) || return 0
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	if ! timeout 300 apt-get install -y -q --no-install-recommends "${missing[@]}" >"$work/apt.log" 2>&1; then
		timeout 300 apt-get update -q >>"$work/apt.log" 2>&1 || true
		for p in "${missing[@]}"; do
			timeout 300 apt-get install -y -q --no-install-recommends "$p" >>"$work/apt.log" 2>&1 ||
				log "could not install $p (see below); continuing without it"
		done
		tail -n 5 "$work/apt.log" || true
	fi
}
install_pkgs
[[ $only == tcp ]] || command -v wrk >/dev/null || log "wrk not available: lmbench uses loadmesh loadtest --json as its load generator"
command -v haproxy >/dev/null || log "HAProxy not available: the HAProxy rows and every ratio are skipped"

# --- builds ------------------------------------------------------------
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
log "building loadmesh (like make build, but keeping the symbol table for perf) and the benchmarks"
CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o "$work/loadmesh" ./cmd/loadmesh
[[ $only == tcp ]] || go build -o "$work/lmbench" ./test/bench/cmd/lmbench
go build -o "$work/tcpbench" ./test/bench/cmd/tcpbench

# --- machine -----------------------------------------------------------
log "machine"
echo "host:      $(uname -a)"
echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "go:        $(go version)"
first() { if command -v "$1" >/dev/null; then { "$@" 2>&1 || true; } | sed -n 1p; else echo none; fi; }
echo "wrk:       $(first wrk -v)"
echo "haproxy:   $(first haproxy -v)"
echo "perf:      $(first perf --version)"

# --- run ---------------------------------------------------------------
tcpbench() {
	log "running tcpbench: TCP services against HAProxy in mode tcp, about 3 minutes (docs/benchmarks.md; BENCH_TCP_ARGS adds flags, BENCH_TCP_DOC=\"\" writes nowhere)"
	# shellcheck disable=SC2086 # BENCH_TCP_ARGS is a list of flags
	"$work/tcpbench" -die-with-parent -bin "$work/loadmesh" -work "$work/tcp" -pidfile "$pidfile" -version "$version" \
		-rounds "${BENCH_ROUNDS:-5}" -doc "${BENCH_TCP_DOC-$root/docs/benchmarks.md}" ${BENCH_TCP_ARGS:-} &
	lmpid=$!
	wait "$lmpid"
}
if [[ $only == tcp ]]; then
	tcpbench
	exit 0
fi

log "running lmbench (defaults take about 7 minutes)"
"$work/lmbench" \
	-bin "$work/loadmesh" \
	-work "$work" \
	-pidfile "$pidfile" \
	-version "$version" \
	-rounds "${BENCH_ROUNDS:-5}" \
	-duration "${BENCH_DURATION:-5s}" \
	-conns "${BENCH_CONNS:-64,8}" \
	-bulk-size "${BENCH_BULK_SIZE:-1073741824}" \
	-loadgen "${BENCH_LOADGEN:-auto}" \
	-profile="${BENCH_PROFILE:-true}" \
	-doc "${BENCH_DOC-$root/docs/benchmarks.md}" &
lmpid=$!
wait "$lmpid"
tcpbench
go build -o "$work/schedbench" ./test/bench/cmd/schedbench && log "running schedbench: skewed cluster and node kills, about 7 minutes (docs/benchmarks-scheduling.md; BENCH_SCHED_ARGS adds flags, BENCH_SCHED_DOC=\"\" writes nowhere)" && { "$work/schedbench" -die-with-parent -bin "$work/loadmesh" -work "$work/sched" -pidfile "$pidfile" -version "$version" -rounds "${BENCH_ROUNDS:-5}" -doc "${BENCH_SCHED_DOC-$root/docs/benchmarks-scheduling.md}" ${BENCH_SCHED_ARGS:-} & lmpid=$!; wait "$lmpid"; }
go build -o "$work/reactbench" ./test/bench/cmd/reactbench && log "running reactbench: autoscaler reaction on a 4-agent cluster, BENCH_ROUNDS fresh clusters of about a minute each (docs/autoscaling.md; BENCH_REACT_ARGS adds flags, BENCH_REACT_DOC=\"\" writes nowhere)" && { "$work/reactbench" -die-with-parent -bin "$work/loadmesh" -work "$work/react" -pidfile "$pidfile" -version "$version" -runs "${BENCH_ROUNDS:-5}" -doc "${BENCH_REACT_DOC-$root/docs/autoscaling.md}" ${BENCH_REACT_ARGS:-} & lmpid=$!; wait "$lmpid"; }
