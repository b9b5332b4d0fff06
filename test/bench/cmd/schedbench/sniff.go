package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// sniffer records when UDP datagrams to one loopback port are sent. It is
// an AF_PACKET socket on lo (root or CAP_NET_RAW) with a classic BPF
// filter "IPv4, UDP, not a fragment, destination port P", so it sees every
// QUIC packet any process sends to P — whether or not anything still
// listens there — at the kernel's timestamp (SO_TIMESTAMPNS), and copies
// nothing else to user space. Payloads are not read (they are encrypted).
type sniffer struct {
	fd   int
	t0   time.Time
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	times []time.Duration // packet times relative to t0
	err   error
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startSniffer(port int, t0 time.Time) (*sniffer, error) {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(syscall.ETH_P_IP)))
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket (needs root or CAP_NET_RAW): %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			syscall.Close(fd)
		}
	}()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return nil, err
	}
	filter := []syscall.SockFilter{
		*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_B|syscall.BPF_ABS, 9), // IP protocol
		*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JEQ|syscall.BPF_K, syscall.IPPROTO_UDP, 0, 6),
		*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_H|syscall.BPF_ABS, 6), // flags + fragment offset
		*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JSET|syscall.BPF_K, 0x1fff, 4, 0),
		*syscall.LsfStmt(syscall.BPF_LDX|syscall.BPF_B|syscall.BPF_MSH, 0), // X = IP header length
		*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_H|syscall.BPF_IND, 2),  // UDP destination port
		*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JEQ|syscall.BPF_K, port, 0, 1),
		*syscall.LsfStmt(syscall.BPF_RET|syscall.BPF_K, 64),
		*syscall.LsfStmt(syscall.BPF_RET|syscall.BPF_K, 0),
	}
	// Attach the filter before binding, so that nothing unfiltered is
	// queued.
	if err := syscall.AttachLsf(fd, filter); err != nil {
		return nil, fmt.Errorf("attach BPF filter: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: lo.Index}); err != nil {
		return nil, fmt.Errorf("bind AF_PACKET to lo: %w", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
		return nil, fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	s := &sniffer{fd: fd, t0: t0, stop: make(chan struct{}), done: make(chan struct{})}
	ok = true
	go s.loop()
	return s, nil
}

func (s *sniffer) loop() {
	defer close(s.done)
	defer syscall.Close(s.fd)
	buf := make([]byte, 64)
	oob := make([]byte, 128)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		_, oobn, _, from, err := syscall.Recvmsg(s.fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == syscall.PACKET_OUTGOING {
			continue // the same packet is seen again as incoming on lo
		}
		at := time.Since(s.t0)
		if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(syscall.Timespec{})) {
					ts := (*syscall.Timespec)(unsafe.Pointer(&m.Data[0]))
					at = time.Unix(ts.Sec, ts.Nsec).Sub(s.t0)
				}
			}
		}
		s.mu.Lock()
		s.times = append(s.times, at)
		s.mu.Unlock()
	}
}

// finish stops the sniffer and returns the packet times and its error.
func (s *sniffer) finish() ([]time.Duration, error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.times, s.err
}
