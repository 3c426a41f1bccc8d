package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCmd writes the manual pages the packages install, generated from the
// commands' own help so that they never disagree with it. Hidden: it is a
// build step, not an operator's command. The date comes from
// $SOURCE_DATE_EPOCH when set, for reproducible packages.
func manCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the manual pages (npanel.1, npanel-server.1, ...) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			return doc.GenManTree(root, &doc.GenManHeader{
				Section: "1",
				Source:  "npanel " + version,
				Manual:  "nPanel Manual",
			}, args[0])
		},
	}
}
