package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/rackplane/rackplane/services/nexus/racksetup"
)

// rackCertsCommand issues a rack's identities from its plan (SPEC S1):
// run before the sled-agents start, which need theirs to speak to anyone.
func rackCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rack-certs",
		Short: "Make the rack CA and issue each sled, nexus zone and the operator its certificate",
		Long: `rack-certs makes the rack's certificate authority in <dir>/ca (unless it is
there) and issues from it, as the plan needs them:
  <dir>/sleds/<sled id>/               the sled-agent's tls_dir
  <dir>/sleds/<sled id>/zones/<zone>/  each nexus zone's, handed to it by its sled-agent
  <dir>/operator/                      sledctl's and rack-setup's --tls-dir
Each holds ca.crt, tls.crt and tls.key (0600). Identities already there are
kept; running it again issues only what a grown plan adds.`,
		Args: cobra.NoArgs,
	}
	var plan, dir string
	cmd.Flags().StringVar(&plan, "plan", "", "the rack plan (YAML or JSON)")
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the rack's certificates")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if dir == "" {
			return fmt.Errorf("--dir is required")
		}
		p, err := racksetup.LoadPlan(plan)
		if err != nil {
			return err
		}
		issued, err := racksetup.Certificates{Dir: dir}.Issue(p, time.Now())
		for _, id := range issued {
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s\n", id)
		}
		return err
	}
	return cmd
}
