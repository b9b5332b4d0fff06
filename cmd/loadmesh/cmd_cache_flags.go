package main

import (
	"strconv"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
)

// byteSize is a flag holding a size in bytes, written with or without a
// unit (agent.ParseByteSize).
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return "0"
	}
	n := *b.v
	switch {
	case n > 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n > 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n > 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

func (b byteSize) Set(s string) error {
	n, err := agent.ParseByteSize(s)
	if err != nil {
		return err
	}
	*b.v = n
	return nil
}

func (byteSize) Type() string { return "size" }
