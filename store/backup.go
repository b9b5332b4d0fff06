package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// A backup file is a snapshot of the replicated state kept outside the
// cluster (loadmesh snapshot save, scheduled snapshots), which can be
// restored into a running cluster:
//
//	LOADMESH-SNAPSHOT 1 <sha256>\n
//	<header: one line of JSON (BackupHeader)>\n
//	<body: the FSM's snapshot encoding, header.body_size bytes>
//
// The first line names the format and its version, so that a reader
// refuses another version before it reads anything else, and carries the
// SHA-256 (lowercase hex) of everything after that line: header and body.
// One checksum covers the metadata as well, so that a flipped digit in an
// index or a cluster ID is caught like one in the body. By hand:
//
//	tail -n +2 FILE | sha256sum

// BackupMagic starts every backup file.
const BackupMagic = "LOADMESH-SNAPSHOT"

// BackupFormat is the format version this loadmesh writes and reads.
const BackupFormat = 1

// MaxBackupBody bounds the body of a backup file. The state is bounded
// (DefaultAuditLimit events, DefaultHistoryMinutes points, MaxTokens
// tokens) to a few MiB; the limit leaves room and still keeps a corrupt
// size field from making a reader allocate without bound.
const MaxBackupBody = 64 << 20

// maxBackupHeader bounds the header line.
const maxBackupHeader = 64 << 10

var (
	// ErrNotBackup is wrapped by the error for a file that is not a
	// loadmesh snapshot at all.
	ErrNotBackup = errors.New("not a loadmesh snapshot")
	// ErrBackupFormat is wrapped by the error for a snapshot of another
	// format version.
	ErrBackupFormat = errors.New("unsupported snapshot format")
	// ErrBackupDamaged is wrapped by the error for a snapshot that is
	// truncated, altered, or has a body that does not decode.
	ErrBackupDamaged = errors.New("damaged snapshot")
)

// BackupHeader describes the state a backup file holds.
type BackupHeader struct {
	// Index and Term are those of the last Raft log entry the state
	// includes.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Created is when the snapshot was taken.
	Created time.Time `json:"created"`
	// ClusterID is the ID of the cluster it was taken from ("" if that
	// node did not know it yet); Node the node that took it.
	ClusterID string `json:"cluster_id,omitempty"`
	Node      string `json:"node,omitempty"`
	// Version is the loadmesh version that wrote the file.
	Version string `json:"loadmesh_version,omitempty"`
	// BodySize is the length of the body in bytes.
	BodySize int64 `json:"body_size"`
}

// Backup is a backup file read back.
type Backup struct {
	Header BackupHeader
	// SHA256 is the file's checksum (lowercase hex), verified.
	SHA256 string
	// Body is the FSM's snapshot encoding (DecodeSnapshot reads it).
	Body []byte
	// Size is the length of the whole file in bytes.
	Size int64
}

// EncodeBackup makes a backup file of body (the FSM's snapshot encoding)
// with header h; h.BodySize is set from body.
func EncodeBackup(h BackupHeader, body []byte) ([]byte, error) {
	if len(body) > MaxBackupBody {
		return nil, fmt.Errorf("encode snapshot: body of %d bytes exceeds the limit of %d", len(body), MaxBackupBody)
	}
	h.BodySize = int64(len(body))
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot header: %w", err)
	}
	sum := sha256.New()
	sum.Write(hdr)
	sum.Write([]byte{'\n'})
	sum.Write(body)
	var b bytes.Buffer
	b.Grow(len(BackupMagic) + 80 + len(hdr) + len(body))
	fmt.Fprintf(&b, "%s %d %s\n", BackupMagic, BackupFormat, hex.EncodeToString(sum.Sum(nil)))
	b.Write(hdr)
	b.WriteByte('\n')
	b.Write(body)
	return b.Bytes(), nil
}

// ReadBackup reads and verifies a backup file from r (at most what a
// file with the largest body can hold).
func ReadBackup(r io.Reader) (Backup, error) {
	limit := int64(len(BackupMagic)+80+maxBackupHeader+1) + MaxBackupBody
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return Backup{}, fmt.Errorf("read snapshot: %w", err)
	}
	if int64(len(b)) > limit {
		return Backup{}, fmt.Errorf("%w: larger than %d bytes", ErrBackupDamaged, limit)
	}
	return DecodeBackup(b)
}

// DecodeBackup verifies a backup file and splits it into header and
// body. Every error is one line and wraps ErrNotBackup, ErrBackupFormat
// or ErrBackupDamaged. It does not decode the body (DecodeSnapshot does).
func DecodeBackup(b []byte) (Backup, error) {
	var bk Backup
	if len(b) == 0 {
		return bk, fmt.Errorf("%w: the file is empty", ErrNotBackup)
	}
	if !bytes.HasPrefix(b, []byte(BackupMagic+" ")) {
		return bk, fmt.Errorf("%w: it does not start with %q", ErrNotBackup, BackupMagic)
	}
	first, rest, ok := bytes.Cut(b, []byte{'\n'})
	if !ok || len(first) > len(BackupMagic)+80 {
		return bk, fmt.Errorf("%w: the first line is cut short or too long", ErrBackupDamaged)
	}
	fields := strings.Fields(string(first[len(BackupMagic):]))
	if len(fields) == 0 {
		return bk, fmt.Errorf("%w: no format version on the first line", ErrBackupDamaged)
	}
	format, err := strconv.Atoi(fields[0])
	switch {
	case err != nil || fields[0] != strconv.Itoa(format):
		return bk, fmt.Errorf("%w: format version %q is not a number", ErrBackupDamaged, fields[0])
	case format != BackupFormat:
		return bk, fmt.Errorf("%w: snapshot format version %d; this loadmesh reads version %d", ErrBackupFormat, format, BackupFormat)
	}
	// Format 1 from here on.
	if len(fields) != 2 || !isLowerHex(fields[1], 64) || string(first) != BackupMagic+" 1 "+fields[1] {
		return bk, fmt.Errorf("%w: the first line does not end in a SHA-256 checksum", ErrBackupDamaged)
	}
	bk.SHA256 = fields[1]
	bk.Size = int64(len(b))
	hdr, body, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok || len(hdr) > maxBackupHeader {
		return bk, fmt.Errorf("%w: truncated or unreadable header", ErrBackupDamaged)
	}
	// Read the size first, so that a cut-off file is reported as such
	// rather than as a checksum mismatch.
	hdrErr := json.Unmarshal(hdr, &bk.Header)
	if hdrErr == nil && bk.Header.BodySize != int64(len(body)) && bk.Header.BodySize >= 0 {
		if int64(len(body)) < bk.Header.BodySize {
			return bk, fmt.Errorf("%w: truncated: the body has %d of %d bytes", ErrBackupDamaged, len(body), bk.Header.BodySize)
		}
		return bk, fmt.Errorf("%w: %d bytes after the body of %d", ErrBackupDamaged, int64(len(body))-bk.Header.BodySize, bk.Header.BodySize)
	}
	sum := sha256.Sum256(rest)
	if got := hex.EncodeToString(sum[:]); got != bk.SHA256 {
		return bk, fmt.Errorf("%w: checksum mismatch: the file says sha256 %.12s…, its contents hash to %.12s…", ErrBackupDamaged, bk.SHA256, got)
	}
	if hdrErr != nil {
		// Written so (the checksum matches), but not by loadmesh.
		return bk, fmt.Errorf("%w: unreadable header: %v", ErrBackupDamaged, hdrErr)
	}
	if bk.Header.BodySize != int64(len(body)) {
		return bk, fmt.Errorf("%w: the header gives a body of %d bytes, the file holds %d", ErrBackupDamaged, bk.Header.BodySize, len(body))
	}
	if bk.Header.BodySize > MaxBackupBody {
		return bk, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", ErrBackupDamaged, bk.Header.BodySize, MaxBackupBody)
	}
	bk.Body = body
	return bk, nil
}
