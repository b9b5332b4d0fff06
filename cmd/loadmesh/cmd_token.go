package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

// apiAuth holds the flags every API command takes (addAPIAuthFlags). One
// command runs per process, so package state is enough.
var apiAuth struct {
	token string
	tlsCA string
}

// addAPIAuthFlags adds --token and --tls-ca. Their environment defaults
// are read when a request is made, so that --help never shows a secret.
func addAPIAuthFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&apiAuth.token, "token", "", "API token (default $LOADMESH_TOKEN); needed for changes, and for reads from another machine")
	f.StringVar(&apiAuth.tlsCA, "tls-ca", "", "CA certificate (PEM) trusted, besides the system roots, for an https:// --api (default $LOADMESH_TLS_CA)")
}

var apiClients = struct {
	sync.Mutex
	m map[string]*http.Client
}{m: map[string]*http.Client{}}

// apiClient returns the HTTP client for the API: the default one, or one
// that also trusts the --tls-ca certificates.
func apiClient() (*http.Client, error) {
	ca := apiAuth.tlsCA
	if ca == "" {
		ca = os.Getenv("LOADMESH_TLS_CA")
	}
	if ca == "" {
		return http.DefaultClient, nil
	}
	apiClients.Lock()
	defer apiClients.Unlock()
	if c, ok := apiClients.m[ca]; ok {
		return c, nil
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", ca)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	c := &http.Client{Transport: tr}
	apiClients.m[ca] = c
	return c, nil
}

// apiDo sends an API request with the caller's token, if any.
func apiDo(req *http.Request) (*http.Response, error) {
	token := apiAuth.token
	if token == "" {
		token = os.Getenv("LOADMESH_TOKEN")
	}
	if token = strings.TrimSpace(token); token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c, err := apiClient()
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// deleteJSON sends DELETE to an API path and decodes the answer into v.
func deleteJSON(ctx context.Context, base, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, apiURL(base, path), nil)
	if err != nil {
		return fmt.Errorf("bad --api %q: %v", base, err)
	}
	resp, err := apiDo(req)
	if err != nil {
		return fmt.Errorf("cannot reach agent at %s: %v", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("agent at %s answered %s", base, resp.Status)
	}
	return json.Unmarshal(b, v)
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens (create, list, revoke)",
		Long: `API tokens authenticate calls to the agents' API. A token has a name, which
the audit log shows for every change made with it, and a role: read (status,
plan, events, metrics) or operator (everything, tokens included). Reads from
the agent's own machine need no token. The cluster's first operator token,
named "bootstrap", is printed once by the first leader (or given with the
agents' --bootstrap-token). Commands take the token from --token or
LOADMESH_TOKEN.`,
	}
	cmd.AddCommand(newTokenCreateCmd(), newTokenListCmd(), newTokenRevokeCmd(), newTokenGenerateCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "create --name NAME --role read|operator|join",
		Short:   "Create a token; it is shown only this once",
		Args:    cobra.NoArgs,
		Example: "  loadmesh token create --name grafana --role read --ttl 2160h\n  loadmesh token create --role join --ttl 1h --uses 1",
	}
	api := apiFlag(cmd)
	name := cmd.Flags().String("name", "", "token name, shown in the audit log (letters, digits, . _ -)")
	role := cmd.Flags().String("role", "", "read, operator, or join (a short-lived token a new node requests its certificate with)")
	uses := cmd.Flags().Int("uses", 1, "join tokens: how many nodes may join with it (0: any number until it expires)")
	ttl := cmd.Flags().Duration("ttl", 0, "the token stops working after this long (0: never)")
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	asJSON := cmd.Flags().Bool("json", false, "print the answer as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *role == "" || *name == "" && *role != string(store.RoleJoin) {
			return fmt.Errorf("--name and --role are required (--name is optional for --role join)")
		}
		req := agent.TokenCreateRequest{Name: *name, Role: store.Role(*role), Reason: *reason}
		if cmd.Flags().Changed("uses") || *role == string(store.RoleJoin) {
			req.Uses = uses
		}
		if *ttl != 0 {
			req.TTL = ttl.String()
		}
		var created agent.TokenCreated
		if err := postJSON(cmd.Context(), *api, "/v1/tokens", req, &created); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(created)
		}
		expires := "never expires"
		if !created.Expires.IsZero() {
			expires = "expires " + created.Expires.Local().Format(time.DateTime)
		}
		if created.Role == store.RoleJoin {
			switch created.Uses {
			case 0:
				expires += ", any number of uses"
			case 1:
				expires += ", single use"
			default:
				expires += fmt.Sprintf(", %d uses", created.Uses)
			}
		}
		fmt.Fprintf(out, "Created token %q (role %s, %s). It is shown only this once:\n\n%s\n", created.Name, created.Role, expires, created.Token)
		return nil
	}
	return cmd
}

func newTokenListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List the tokens (never their secrets)", Args: cobra.NoArgs}
	api := apiFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the raw JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var list []agent.TokenView
		raw, err := getJSON(cmd.Context(), *api, "/v1/tokens", &list)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			_, err := out.Write(raw)
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROLE\tID\tCREATED\tEXPIRES\tCREATED BY\tUSES LEFT\t")
		for _, t := range list {
			expires := "never"
			if !t.Expires.IsZero() {
				expires = t.Expires.Local().Format(time.DateTime)
				if t.Expired {
					expires += " (expired)"
				}
			}
			left := "-"
			if t.Role == store.RoleJoin {
				left = "any"
				if t.Uses > 0 {
					left = fmt.Sprintf("%d of %d", t.Uses-t.Used, t.Uses)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name, t.Role, t.ID, t.Created.Local().Format(time.DateTime), expires, t.CreatedBy, left)
		}
		return tw.Flush()
	}
	return cmd
}

func newTokenRevokeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "revoke NAME", Short: "Revoke a token on every node", Args: cobra.ExactArgs(1)}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var ev scheduler.Event
		path := "/v1/tokens/" + url.PathEscape(args[0]) + "?reason=" + url.QueryEscape(*reason)
		if err := deleteJSON(cmd.Context(), *api, path, &ev); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "revoked token %q\n", args[0])
		return nil
	}
	return cmd
}

func newTokenGenerateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "generate",
		Short: "Print a new random token for the agents' --bootstrap-token (contacts no agent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := agent.NewToken()
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
}
