package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/transport"
)

func newTLSCmd() *cobra.Command {
	tlsCmd := &cobra.Command{
		Use:   "tls",
		Short: "Create the cluster CA and node certificates for mutual TLS",
	}
	ca := &cobra.Command{Use: "ca", Short: "Manage the cluster certificate authority"}
	cert := &cobra.Command{Use: "cert", Short: "Manage node certificates"}
	tlsCmd.AddCommand(ca, cert)

	var dir, commonName string
	var days int
	caCreate := &cobra.Command{
		Use:   "create",
		Short: "Create a cluster CA (loadmesh-ca.pem and loadmesh-ca-key.pem)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			certFile, keyFile := filepath.Join(dir, "loadmesh-ca.pem"), filepath.Join(dir, "loadmesh-ca-key.pem")
			if err := refuseOverwrite(certFile, keyFile); err != nil {
				return err
			}
			c, err := transport.NewCA(commonName, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			key, err := c.KeyPEM()
			if err != nil {
				return err
			}
			if err := writeFiles(map[string][]byte{certFile: c.CertPEM}, map[string][]byte{keyFile: key}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (keep the key secret; nodes need only the certificate)\n", certFile, keyFile)
			return nil
		},
	}
	caCreate.Flags().StringVar(&dir, "dir", ".", "directory to write the files to")
	caCreate.Flags().StringVar(&commonName, "common-name", "loadmesh cluster CA", "CA subject common name")
	caCreate.Flags().IntVar(&days, "days", 3650, "validity in days")
	ca.AddCommand(caCreate)
	ca.AddCommand(newCABundleCmd(), newCAInspectCmd())

	var node, caFile, caKeyFile, outDir string
	var certDays int
	var ips, dnsNames []string
	certCreate := &cobra.Command{
		Use:   "create",
		Short: "Issue a node certificate signed by the cluster CA (<node>.pem and <node>-key.pem)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return errors.New("--node is required")
			}
			var ipList []net.IP
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("--ip %q is not an IP address", s)
				}
				ipList = append(ipList, ip)
			}
			c, err := transport.LoadCA(caFile, caKeyFile)
			if err != nil {
				return err
			}
			certFile, keyFile := filepath.Join(outDir, node+".pem"), filepath.Join(outDir, node+"-key.pem")
			if err := refuseOverwrite(certFile, keyFile); err != nil {
				return err
			}
			certPEM, keyPEM, err := c.IssueNodeCert(node, time.Duration(certDays)*24*time.Hour, ipList, dnsNames)
			if err != nil {
				return err
			}
			if err := writeFiles(map[string][]byte{certFile: certPEM}, map[string][]byte{keyFile: keyPEM}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s for node %q\n", certFile, keyFile, node)
			return nil
		},
	}
	f := certCreate.Flags()
	f.StringVar(&node, "node", "", "node name the certificate is for (the agent's --name)")
	f.StringVar(&caFile, "ca", "loadmesh-ca.pem", "CA certificate")
	f.StringVar(&caKeyFile, "ca-key", "loadmesh-ca-key.pem", "CA private key")
	f.StringVar(&outDir, "dir", ".", "directory to write the files to")
	f.IntVar(&certDays, "days", 365, "validity in days")
	f.StringSliceVar(&ips, "ip", nil, "IP address SANs (optional; peers are verified by node name)")
	f.StringSliceVar(&dnsNames, "dns", nil, "DNS name SANs (optional)")
	cert.AddCommand(certCreate)
	return tlsCmd
}

func refuseOverwrite(files ...string) error {
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%s already exists; not overwriting it", f)
		}
	}
	return nil
}

func writeFiles(public, secret map[string][]byte) error {
	for _, m := range []map[string][]byte{public, secret} {
		for name := range m {
			// The directory holds keys: only its owner may list it.
			if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
				return err
			}
		}
	}
	for name, b := range public {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			return err
		}
	}
	for name, b := range secret {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
