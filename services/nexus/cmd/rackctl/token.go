package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/spf13/cobra"
)

// userJSON is the API's CurrentUser.
type userJSON struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	SiloName    string `json:"silo_name"`
	FleetViewer bool   `json:"fleet_viewer"`
	SiloAdmin   bool   `json:"silo_admin"`
}

var userColumns = columns[userJSON]{
	header: []string{"NAME", "ID", "SILO", "FLEET-VIEWER", "SILO-ADMIN"},
	row: func(u userJSON) []string {
		return []string{u.DisplayName, u.ID, u.SiloName, boolText(u.FleetViewer), boolText(u.SiloAdmin)}
	},
}

// tokenJSON is the API's AccessToken; principal only in the fleet-wide
// list.
type tokenJSON struct {
	ID          string     `json:"id"`
	Principal   string     `json:"principal"`
	TimeCreated *time.Time `json:"time_created"`
	TimeExpires *time.Time `json:"time_expires"`
}

var tokenColumns = columns[tokenJSON]{
	header: []string{"ID", "PRINCIPAL", "CREATED", "EXPIRES"},
	row: func(t tokenJSON) []string {
		return []string{t.ID, t.Principal, timeText(t.TimeCreated), expiresText(t.TimeExpires)}
	},
}

// createdTokenJSON is the API's AccessTokenCreated: the secret, this once.
type createdTokenJSON struct {
	ID          string     `json:"id"`
	Token       string     `json:"token"`
	Principal   string     `json:"principal"`
	TimeExpires *time.Time `json:"time_expires"`
}

var createdTokenColumns = columns[createdTokenJSON]{
	header: []string{"ID", "PRINCIPAL", "EXPIRES", "TOKEN"},
	row: func(t createdTokenJSON) []string {
		return []string{t.ID, t.Principal, expiresText(t.TimeExpires), t.Token}
	},
}

func expiresText(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return timeText(t)
}

func (c *client) whoami(ctx context.Context) (userJSON, []byte, error) {
	body, err := c.sdkOne(func(sdk *oxide.Client) error {
		_, err := sdk.CurrentUserView(ctx)
		return err
	})
	if err != nil {
		return userJSON{}, nil, err
	}
	me, err := decode[userJSON](body)
	return me, body, err
}

func whoamiCommand(s *session) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the token is (GET /v1/me)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runObject(s, cmd, userColumns, func(c *client) ([]byte, error) {
				_, body, err := c.whoami(cmd.Context())
				return body, err
			})
		},
	}
}

func tokenCommand(s *session) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Aliases: []string{"tokens"}, Short: "API tokens"}
	cmd.AddCommand(tokenCreateCommand(s), tokenListCommand(s), tokenRevokeCommand(s))
	return cmd
}

// roleGrant is one role of a new token, as the API takes it.
type roleGrant struct {
	Role    string `json:"role"`
	Project string `json:"project,omitempty"`
}

// parseRoles reads --role values: admin, or collaborator:PROJECT or
// viewer:PROJECT. Which roles exist is the API's to say.
func parseRoles(values []string) ([]roleGrant, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("--role: give at least one: admin, collaborator:PROJECT or viewer:PROJECT")
	}
	grants := make([]roleGrant, len(values))
	for i, v := range values {
		role, project, _ := strings.Cut(v, ":")
		if role == "" {
			return nil, fmt.Errorf("--role %q: want admin, collaborator:PROJECT or viewer:PROJECT", v)
		}
		grants[i] = roleGrant{Role: role, Project: project}
	}
	return grants, nil
}

func tokenCreateCommand(s *session) *cobra.Command {
	var (
		principal string
		roles     []string
		expiresIn time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --principal NAME --role ROLE[:PROJECT]... [--expires-in DURATION]",
		Short: "Mint a token for a principal with the roles it grants (fleet admin); the secret is shown this once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			grants, err := parseRoles(roles)
			if err != nil {
				return err
			}
			body := map[string]any{"principal": principal, "roles": grants}
			if cmd.Flags().Changed("expires-in") {
				if expiresIn < time.Second || expiresIn%time.Second != 0 {
					return fmt.Errorf("--expires-in: %s is not a whole, positive number of seconds", expiresIn)
				}
				body["expires_in_seconds"] = uint64(expiresIn / time.Second)
			}
			return runObject(s, cmd, createdTokenColumns, func(c *client) ([]byte, error) {
				return c.call(cmd.Context(), http.MethodPost, "/v1/system/access-tokens", body)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&principal, "principal", "", "who the token is for")
	f.StringArrayVar(&roles, "role", nil, "a role it grants: admin, collaborator:PROJECT or viewer:PROJECT (repeat for several)")
	f.DurationVar(&expiresIn, "expires-in", 0, "how long it lasts, e.g. 1h (default: it does not expire)")
	return cmd
}

func tokenListCommand(s *session) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list [--all]",
		Short: "List your own tokens, or with --all every principal's (fleet admin); never their secrets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all {
				return runExtList(s, cmd, tokenColumns, fmt.Sprintf("/v1/system/access-tokens?limit=%d", pageLimit))
			}
			return runList(s, cmd, tokenColumns, func(sdk *oxide.Client) error {
				limit := pageLimit
				_, err := sdk.CurrentUserAccessTokenListAllPages(cmd.Context(), oxide.CurrentUserAccessTokenListParams{Limit: &limit})
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every principal's tokens (fleet admin)")
	return cmd
}

func tokenRevokeCommand(s *session) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "revoke TOKEN_ID [--all]",
		Short: "Revoke one of your tokens, or with --all anyone's (fleet admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDone(s, cmd, "revoked token "+args[0], func(c *client) error {
				if all {
					_, err := c.call(cmd.Context(), http.MethodDelete, "/v1/system/access-tokens/"+url.PathEscape(args[0]), nil)
					return err
				}
				_, err := c.viaSDK(func(sdk *oxide.Client) error {
					return sdk.CurrentUserAccessTokenDelete(cmd.Context(), oxide.CurrentUserAccessTokenDeleteParams{TokenId: args[0]})
				})
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "revoke any principal's token (fleet admin)")
	return cmd
}
