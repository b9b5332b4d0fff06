package cluster

import (
	"reflect"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{Load: []byte{1, 2, 3}, Zone: "eu-1a", HTTP: "10.0.0.1:8080", Peer: "10.0.0.1:7947", Raft: "10.0.0.1:7948", API: "10.0.0.1:7950", Serving: true, BootstrapExpect: 3}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: got %+v, %v; want %+v", got, err, m)
	}
}

func TestMetaRejectsOversizeAndBadVersion(t *testing.T) {
	if _, err := EncodeMeta(Meta{Zone: strings.Repeat("z", 600)}); err == nil {
		t.Fatal("oversized meta encoded without error")
	}
	for _, b := range [][]byte{nil, {}, {2, '{', '}'}, {1, 'x'}, append([]byte{1}, make([]byte, 600)...)} {
		if _, err := DecodeMeta(b); err == nil {
			t.Fatalf("DecodeMeta(%q) succeeded", b)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := EncodeMeta(Meta{Zone: "a", HTTP: "1.2.3.4:5", Raft: "1.2.3.4:6", Serving: true})
	f.Add(good)
	f.Add([]byte{1, '{', '}'})
	f.Add([]byte{1, '[', ']'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode again (when it fits) and decode to
		// the same value.
		enc, err := EncodeMeta(m)
		if err != nil {
			return
		}
		again, err := DecodeMeta(enc)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-decode: %+v, %v; want %+v", again, err, m)
		}
	})
}
