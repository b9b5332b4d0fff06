package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/transport"
)

// newCABundleCmd is `loadmesh tls ca bundle`: the trust bundle that lets
// old and new CA certificates work side by side while the cluster CA is
// rotated.
func newCABundleCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "bundle CA.pem... [--out bundle.pem]",
		Short: "Concatenate CA certificates into one --tls-ca trust bundle, checking each",
		Long: `Concatenate CA certificates (for example the old and the new cluster CA
while the CA is rotated) into one PEM bundle for the agents' --tls-ca. Each
must be a CA certificate, valid now, and in the bundle once. Only
certificates are copied: a private key in an input file is left out.

See "Rotating the cluster CA" in the README for the whole procedure.`,
		Example: "  loadmesh tls ca bundle old/loadmesh-ca.pem new/loadmesh-ca.pem --out bundle.pem",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cas []*x509.Certificate
			for _, f := range args {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				certs, err := transport.ParseCABundle(b)
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				cas = append(cas, certs...)
			}
			if err := transport.CheckCABundle(cas, time.Now()); err != nil {
				return err
			}
			var bundle []byte
			for _, c := range cas {
				bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
			}
			if out == "" {
				_, err := cmd.OutOrStdout().Write(bundle)
				return err
			}
			if err := refuseOverwrite(out); err != nil {
				return err
			}
			if err := writeFiles(map[string][]byte{out: bundle}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s with %d CA certificates:\n", out, len(cas))
			return printCAs(cmd.OutOrStdout(), cas)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the bundle to (default standard output)")
	return cmd
}

// newCAInspectCmd is `loadmesh tls ca inspect`.
func newCAInspectCmd() *cobra.Command {
	var certFiles []string
	cmd := &cobra.Command{
		Use:   "inspect FILE [--cert NODE.pem]...",
		Short: "List the CA certificates of a --tls-ca file or bundle, and which one signed a node certificate",
		Long: `List each CA certificate of a PEM file or bundle: subject, serial number,
SHA-256 fingerprint (as GET /v1/status and loadmesh status show the
trusted CAs) and expiry. With --cert, also say which CA of the file signed
each node certificate, or that none did.`,
		Example: "  loadmesh tls ca inspect /etc/loadmesh/ca.pem --cert /etc/loadmesh/node-1.pem",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			cas, err := transport.ParseCABundle(b)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			out := cmd.OutOrStdout()
			if err := printCAs(out, cas); err != nil {
				return err
			}
			var unsigned []string
			for _, f := range certFiles {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				blk, _ := pem.Decode(b)
				if blk == nil || blk.Type != "CERTIFICATE" {
					return fmt.Errorf("%s: no pem certificate found", f)
				}
				leaf, err := x509.ParseCertificate(blk.Bytes)
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				name, err := transport.NodeNameFromCert(leaf)
				if err != nil {
					name = "?"
				}
				ca := transport.IssuerIn(leaf, cas)
				if ca == nil {
					fmt.Fprintf(out, "%s (node %q, until %s): signed by none of these CAs\n", f, name, leaf.NotAfter.UTC().Format(time.DateOnly))
					unsigned = append(unsigned, f)
					continue
				}
				fmt.Fprintf(out, "%s (node %q, until %s): signed by %s\n", f, name, leaf.NotAfter.UTC().Format(time.DateOnly), transport.Fingerprint(ca))
			}
			if len(unsigned) > 0 {
				return fmt.Errorf("%d of %d certificates are not signed by a CA of %s", len(unsigned), len(certFiles), args[0])
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&certFiles, "cert", nil, "node certificate to match against the CAs (repeatable)")
	return cmd
}

func printCAs(w io.Writer, cas []*x509.Certificate) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSUBJECT\tSERIAL\tSHA-256 FINGERPRINT\tNOT AFTER")
	for i, c := range cas {
		s := agent.NewCAStatus(c)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, s.Subject, s.Serial, s.Fingerprint, s.NotAfter.UTC().Format(time.DateOnly))
	}
	return tw.Flush()
}

// printTrust is loadmesh status' line about the trusted CAs: during a CA
// rotation, check it on every node before going on.
func printTrust(w io.Writer, t *agent.TLSStatus) {
	if len(t.TrustedCAs) == 0 {
		return
	}
	fmt.Fprintf(w, "Trust:   %d CA(s):", len(t.TrustedCAs))
	for _, c := range t.TrustedCAs {
		mark := ""
		if c.Fingerprint == t.NodeCertIssuer {
			mark = " (signed this node's certificate)"
		}
		fmt.Fprintf(w, " %s%s", c.Fingerprint[:16], mark)
	}
	fmt.Fprintln(w)
}
