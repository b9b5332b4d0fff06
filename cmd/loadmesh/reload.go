package main

import (
	"encoding/csv"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
)

// agentSources reads `loadmesh agent`'s configuration from its sources
// (command line > LOADMESH_* environment > --config file > defaults),
// at start and again on SIGHUP. The command line does not change while
// the process runs, and neither does the environment; the file is read
// again.
type agentSources struct {
	fs *pflag.FlagSet
	// cfg, configFile, logLevel and logFormat are what the flags are
	// bound to.
	cfg                             *agent.Config
	configFile, logLevel, logFormat *string
	// cli are the flags set on the command line, known after the first
	// load.
	cli map[string]bool
	// devToken is the operator token made up for a --dev node at start,
	// kept across reloads.
	devToken string
}

// agentSkip are flags that are not configuration (or not from a file).
var agentSkip = map[string]bool{"config": true, "help": true}

// load fills the flag-bound values from the sources and returns the
// agent's configuration, with the derived defaults (the host name as
// --name, --dev's loopback addresses) applied.
func (s *agentSources) load() (agent.Config, error) {
	if s.cli == nil {
		s.cli = map[string]bool{}
		s.fs.Visit(func(f *pflag.Flag) { s.cli[f.Name] = true })
	} else {
		s.resetToDefaults()
	}
	set, err := applySources(s.fs, *s.configFile, agentSkip)
	if err != nil {
		return agent.Config{}, err
	}
	cfg := *s.cfg
	if cfg.Name == "" {
		if cfg.Name, err = os.Hostname(); err != nil {
			return agent.Config{}, fmt.Errorf("--name not set and hostname unknown: %w", err)
		}
	}
	if cfg.Dev {
		for flag, addr := range agent.DevAddresses {
			if !set[flag] {
				setDevAddr(&cfg, flag, addr)
			}
		}
		if cfg.BootstrapToken == "" {
			cfg.BootstrapToken = s.devToken
		}
	}
	return cfg, nil
}

// resetToDefaults sets every flag the command line did not set back to
// its default, so that a key removed from the file falls back to it.
func (s *agentSources) resetToDefaults() {
	s.fs.VisitAll(func(f *pflag.Flag) {
		if s.cli[f.Name] || agentSkip[f.Name] {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			sv.Replace(parseSliceDefault(f.DefValue))
			return
		}
		f.Value.Set(f.DefValue)
	})
}

// parseSliceDefault reads a slice flag's default as pflag prints it:
// "[a,b]".
func parseSliceDefault(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if s == "" {
		return nil
	}
	vals, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		return nil
	}
	return vals
}

// reloader applies a SIGHUP: it reads the sources again and hands the
// result to the agent; the log level it sets itself.
type reloader struct {
	src   *agentSources
	a     *agent.Agent
	log   *slog.Logger
	level *slog.LevelVar
	// format is the --log-format the process started with.
	format string
}

// reload runs one reload and logs its outcome: an error keeps the running
// configuration (the process stays up), a change that needs a restart is
// one line per flag, and what was applied is one line.
func (r *reloader) reload() {
	start := time.Now()
	cfg, err := r.src.load()
	var lv slog.Level
	if err == nil {
		lv, err = parseLevel(*r.src.logLevel)
	}
	if err == nil && !validFormat(*r.src.logFormat) {
		err = fmt.Errorf("--log-format %q: want text or json", *r.src.logFormat)
	}
	var rep agent.ReloadReport
	if err == nil {
		rep, err = r.a.Reload(cfg)
	}
	if err != nil {
		r.log.Error("reload failed; the running configuration stays in force", "error", oneLine(err))
		return
	}
	if !strings.EqualFold(*r.src.logFormat, r.format) {
		rep.Restart = append(rep.Restart, "log-format")
	}
	if was := r.level.Level(); was != lv {
		rep.Applied = append(rep.Applied, fmt.Sprintf("log-level: %s → %s", levelName(was), levelName(lv)))
	}
	for _, flag := range rep.Restart {
		r.log.Warn(fmt.Sprintf("%s changed; restart to apply", flag), "flag", flag)
	}
	applied := "nothing changed"
	if len(rep.Applied) > 0 {
		applied = strings.Join(rep.Applied, "; ")
	}
	// Logged before a new level applies, so that it shows even when the
	// level goes up.
	r.log.Info("configuration reloaded", "applied", applied, "config", *r.src.configFile,
		"duration", time.Since(start).Round(time.Millisecond))
	r.level.Set(lv)
}

func validFormat(f string) bool {
	switch strings.ToLower(f) {
	case "text", "json", "":
		return true
	}
	return false
}

// levelName names a level the way --log-level does.
func levelName(l slog.Level) string {
	if l == slog.LevelDebug-4 {
		return "trace"
	}
	return strings.ToLower(l.String())
}
