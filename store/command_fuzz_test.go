package store

import (
	"bytes"
	"testing"
)

// FuzzApplyCommand: any input is a clean error, or a valid command that
// encodes again and that the FSM applies (or refuses) without panicking.
// The keyring and revocation seeds are also in testdata/fuzz for
// FuzzDecodeCommand.
func FuzzApplyCommand(f *testing.F) {
	for _, c := range []Command{
		{Op: OpKeyringInstall, Key: bytes.Repeat([]byte{1}, 32), Time: t0, Who: "op"},
		{Op: OpKeyringUse, KeyID: KeyFingerprint(bytes.Repeat([]byte{1}, 32)), Time: t0},
		{Op: OpKeyringRemove, KeyID: "0011223344556677", Time: t0},
		{Op: OpNodeRevoke, Node: "n1", Time: t0, Why: "stolen"},
		{Op: OpNodeRemove, Node: "n1", Time: t0},
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, '{', '}'})
	f.Add([]byte{1})
	f.Add([]byte(`{"op":"keyring.install","key":"AAAA","time":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		if _, err := EncodeCommand(c); err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		f := NewFSM(nil, nil)
		f.mu.Lock()
		f.apply(c)
		f.mu.Unlock()
	})
}
