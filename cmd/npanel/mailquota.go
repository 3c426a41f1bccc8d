package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/nodeagent/actions/mail"
)

// mailQuotaWarningCmd is the hidden command Dovecot's quota-warning
// service runs on a mail node (see mail.QuotaWarningMain); its flags are
// parsed there, not by cobra.
func mailQuotaWarningCmd() *cobra.Command {
	return &cobra.Command{
		Use:                mail.QuotaWarningCommand + " --lda LDA --doveadm DOVEADM --config CONF --from ADDR -- PERCENT USER",
		Short:              "Deliver a mailbox quota warning (run by Dovecot)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := mail.QuotaWarningMain(args, cmd.ErrOrStderr()); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}
