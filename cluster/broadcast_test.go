package cluster

import (
	"bytes"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	payload := []byte{1, 2, 3}
	b := encodeMessage(7, "node-1", payload)
	topic, from, got, err := decodeMessage(b)
	if err != nil || topic != 7 || from != "node-1" || !bytes.Equal(got, payload) {
		t.Fatalf("decode: %d %q %v %v", topic, from, got, err)
	}
	for _, bad := range [][]byte{nil, {1, 7}, {2, 7, 1, 'a'}, {1, 7, 0}, {1, 7, 5, 'a'}} {
		if _, _, _, err := decodeMessage(bad); err == nil {
			t.Errorf("decodeMessage(%v) accepted", bad)
		}
	}
}

func TestDelegateDispatchesByTopic(t *testing.T) {
	var got []string
	d := &delegate{handlers: map[byte]MessageHandler{
		3: func(from string, payload []byte) { got = append(got, from+":"+string(payload)) },
	}}
	d.NotifyMsg(encodeMessage(3, "a", []byte("x")))
	d.NotifyMsg(encodeMessage(4, "b", []byte("y"))) // no handler
	d.NotifyMsg([]byte("garbage"))
	if strings.Join(got, ",") != "a:x" {
		t.Fatalf("handled %v, want [a:x]", got)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(1, "node-1", []byte{1, 0, 0}))
	f.Add([]byte{1, 1, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		topic, from, payload, err := decodeMessage(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeMessage(topic, from, payload), b) {
			t.Fatalf("encode(decode(%v)) differs", b)
		}
	})
}
