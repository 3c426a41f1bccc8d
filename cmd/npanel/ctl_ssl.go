package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cmdline"
)

// sslCmd is "npanel ctl ssl": the sites' TLS certificates, ordered from
// the ACME CA or installed, and their HTTPS redirect and HSTS. A private
// key is never an argument: install reads it from a file (--key), so it
// stays out of the shell history and the process list.
func sslCmd(o *ctlOptions) *cobra.Command {
	cmd := group(&cobra.Command{Use: "ssl", Short: "TLS certificates of sites, HTTPS redirect and HSTS"})
	cmd.AddCommand(sslRequestCmd(o), sslListCmd(o, false), sslListCmd(o, true), sslShowCmd(o), sslRenewCmd(o), sslRevokeCmd(o),
		sslInstallCmd(o), sslDeleteCmd(o), sslRedirectCmd(o), sslHSTSCmd(o), sslAutoRenewCmd(o))
	return cmd
}

var certStatuses = []string{"PENDING", "ISSUED", "RENEWING", "FAILED", "REVOKED", "EXPIRED"}

// certDone reports whether a certificate's latest order or change has
// finished, for --wait.
func certDone(c *client.Certificate) bool {
	if c.ObservedGeneration < c.Generation {
		return false
	}
	return c.Status != "PENDING" && c.Status != "RENEWING"
}

func sslRequestCmd(o *ctlOptions) *cobra.Command {
	var sans []string
	var challenge string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "request DOMAIN [--san NAME]... [--challenge http01|dns01] [--wait]",
		Short: "Order a certificate for a site from the ACME CA",
		Args:  cobra.ExactArgs(1),
		// Every site has a DNS zone of its name: the zones complete sites.
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			ch := strings.ToUpper(challenge)
			if ch != "HTTP01" && ch != "DNS01" {
				return cmdline.Usagef("--challenge: %q: want http01 or dns01", challenge)
			}
			if timeout <= 0 {
				return cmdline.Usagef("--timeout must be positive")
			}
			for _, s := range sans {
				if strings.HasPrefix(s, "*.") && ch != "DNS01" {
					return cmdline.Usagef("--san %s: a wildcard needs --challenge dns01", s)
				}
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			cert, err := c.RequestCertificate(cmd.Context(), args[0], sans, ch)
			if err != nil {
				return apiError(err)
			}
			if wait {
				return o.waitCertificate(cmd, c, cert, timeout)
			}
			return o.printCertificate(cmd, cert)
		},
	}
	cmd.Flags().StringArrayVar(&sans, "san", nil, "another name of the certificate (repeatable): www.DOMAIN, mail.DOMAIN, *.DOMAIN (dns01)")
	cmd.Flags().StringVar(&challenge, "challenge", "http01", "http01 or dns01 (wildcards need dns01)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the certificate is issued or failed, printing its events")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, give up after this long")
	return cmd
}

// waitCertificate polls a certificate until its order ends, printing each
// new event; a failed order is exit 1.
func (o *ctlOptions) waitCertificate(cmd *cobra.Command, c *client.Client, cert *client.Certificate, timeout time.Duration) error {
	id, show := cert.ID, o.newEvents(cmd.ErrOrStderr(), cert.Events)
	cert, err := poller[client.Certificate]{
		kind: "certificate", id: id, every: time.Second,
		get:    func(ctx context.Context) (*client.Certificate, error) { return c.Certificate(ctx, id) },
		done:   certDone,
		status: func(c *client.Certificate) string { return c.Status },
		show:   func(c *client.Certificate) { show(c.Events) },
	}.wait(cmd.Context(), cert, timeout)
	if err != nil {
		return err
	}
	if err := o.printCertificate(cmd, cert); err != nil {
		return err
	}
	if cert.Status == "FAILED" {
		return fmt.Errorf("certificate %s failed: %s", cert.ID, deref(cert.LastError))
	}
	return nil
}

func sslListCmd(o *ctlOptions, expiring bool) *cobra.Command {
	var f client.CertificateFilter
	var limit, days int
	cmd := &cobra.Command{
		Use:   "list [--account ACCOUNT] [--domain DOMAIN] [--status STATUS]",
		Short: "List certificates",
		Args:  cobra.NoArgs,
	}
	if expiring {
		cmd.Use, cmd.Short = "expiring [--days 30]", "List certificates that expire within --days (expired ones too)"
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if limit < 1 {
			return cmdline.Usagef("--limit must be at least 1")
		}
		if expiring {
			if days < 0 || days > 3650 {
				return cmdline.Usagef("--days: %d: give 0 to 3650", days)
			}
			f.ExpiringWithinDays = &days
		}
		if f.Status != "" {
			f.Status = strings.ToUpper(f.Status)
			if !slices.Contains(certStatuses, f.Status) {
				return cmdline.Usagef("--status: %q: want one of %s", f.Status, strings.ToLower(strings.Join(certStatuses, ", ")))
			}
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		certs, err := allPages(limit, func(first int, after string) ([]client.Certificate, string, error) {
			return c.Certificates(cmd.Context(), f, first, after)
		})
		if err != nil {
			return err
		}
		if certs == nil {
			certs = []client.Certificate{}
		}
		return o.print(cmd.OutOrStdout(), certs, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tSTATUS\tNOT AFTER\tAUTO-RENEW\tDOMAINS\tISSUER\tLAST ERROR")
			for _, c := range certs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, certStatus(&c), timeOrDash(c.NotAfter), yesNo(c.AutoRenew),
					strings.Join(c.Domains, ","), dash(deref(c.Issuer)), dash(oneLine(deref(c.LastError))))
			}
		})
	}
	if !expiring {
		cmd.Flags().StringVar(&f.Account, "account", "", "only this account's (id or username)")
		cmd.Flags().StringVar(&f.Domain, "domain", "", "only the certificate of this site or covering this name")
		cmd.Flags().StringVar(&f.Status, "status", "", "only this status: "+strings.ToLower(strings.Join(certStatuses, ", ")))
		_ = cmd.RegisterFlagCompletionFunc("account", o.completeAccounts)
	} else {
		cmd.Flags().IntVar(&days, "days", 30, "expiring within this many days")
	}
	cmd.Flags().IntVar(&limit, "limit", 1000, "list at most this many")
	return cmd
}

func certStatus(c *client.Certificate) string {
	s := c.Status
	if c.Deleting {
		s += " (deleting)"
	}
	if c.Custom {
		s += " (installed)"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

func (o *ctlOptions) printCertificate(cmd *cobra.Command, c *client.Certificate) error {
	return o.print(cmd.OutOrStdout(), c, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "ID:\t%s\n", c.ID)
		fmt.Fprintf(tw, "Status:\t%s\n", certStatus(c))
		fmt.Fprintf(tw, "Domains:\t%s\n", strings.Join(c.Domains, ", "))
		if len(c.IssuedDomains) > 0 {
			fmt.Fprintf(tw, "Issued for:\t%s\n", strings.Join(c.IssuedDomains, ", "))
		}
		fmt.Fprintf(tw, "Challenge:\t%s\n", c.Challenge)
		fmt.Fprintf(tw, "Issuer:\t%s\n", dash(deref(c.Issuer)))
		fmt.Fprintf(tw, "Serial:\t%s\n", dash(deref(c.Serial)))
		fmt.Fprintf(tw, "Valid:\t%s .. %s\n", timeOrDash(c.NotBefore), timeOrDash(c.NotAfter))
		fmt.Fprintf(tw, "Auto-renew:\t%s\n", yesNo(c.AutoRenew))
		if c.RenewAt != nil {
			fmt.Fprintf(tw, "Renews at:\t%s\n", timeOrDash(c.RenewAt))
		}
		fmt.Fprintf(tw, "Node:\t%s\n", dash(deref(c.Node)))
		if c.LastError != nil {
			fmt.Fprintf(tw, "Last error:\t%s (%d failures)\n", oneLine(*c.LastError), c.Failures)
		}
		for _, e := range c.Events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.At.UTC().Format(time.RFC3339), e.Kind, oneLine(deref(e.Message)))
		}
	})
}

func sslShowCmd(o *ctlOptions) *cobra.Command {
	var chain bool
	cmd := &cobra.Command{
		Use: "show ID [--chain]", Short: "Show a certificate and its events", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeCertificates,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			cert, err := c.Certificate(cmd.Context(), args[0])
			if err != nil {
				return apiError(err)
			}
			if cert == nil {
				return fmt.Errorf("NOT_FOUND: certificate %q not found", args[0])
			}
			if chain {
				if cert.ChainPEM == nil {
					return fmt.Errorf("certificate %s has no chain served yet (%s)", cert.ID, cert.Status)
				}
				_, err := fmt.Fprint(cmd.OutOrStdout(), *cert.ChainPEM)
				return err
			}
			cert.ChainPEM = nil // in -o json too: --chain prints it
			return o.printCertificate(cmd, cert)
		},
	}
	cmd.Flags().BoolVar(&chain, "chain", false, "print the served chain (PEM, public) instead")
	return cmd
}

// certCall is a command taking a certificate id that calls one mutation.
func (o *ctlOptions) certCall(use, short string, nargs int, call func(ctx context.Context, c *client.Client, args []string) (*client.Certificate, error)) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(nargs),
		ValidArgsFunction: o.completeCertificates,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			cert, err := call(cmd.Context(), c, args)
			if err != nil {
				return apiError(err)
			}
			return o.printCertificate(cmd, cert)
		},
	}
}

func sslRenewCmd(o *ctlOptions) *cobra.Command {
	return o.certCall("renew ID", "Order the certificate again now", 1, func(ctx context.Context, c *client.Client, args []string) (*client.Certificate, error) {
		return c.RenewCertificate(ctx, args[0])
	})
}

// revocationReason reads --reason: a name (key-compromise) or an RFC 5280
// code (1).
func revocationReason(s string) (string, error) {
	names := map[string]string{"unspecified": "UNSPECIFIED", "key-compromise": "KEY_COMPROMISE", "affiliation-changed": "AFFILIATION_CHANGED",
		"superseded": "SUPERSEDED", "cessation-of-operation": "CESSATION_OF_OPERATION"}
	codes := map[int]string{0: "UNSPECIFIED", 1: "KEY_COMPROMISE", 3: "AFFILIATION_CHANGED", 4: "SUPERSEDED", 5: "CESSATION_OF_OPERATION"}
	k := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-")
	if r, ok := names[k]; ok {
		return r, nil
	}
	if n, err := strconv.Atoi(k); err == nil {
		if r, ok := codes[n]; ok {
			return r, nil
		}
	}
	return "", cmdline.Usagef("--reason: %q: want unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation (or RFC 5280 code 0, 1, 3, 4, 5)", s)
}

func sslRevokeCmd(o *ctlOptions) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use: "revoke ID [--reason REASON] [--yes]", Short: "Revoke a certificate at the CA", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeCertificates,
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r, err := revocationReason(reason)
		if err != nil {
			return err
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "revoke certificate "+args[0]+" (the site falls back to a self-signed certificate)"); err != nil {
			return err
		}
		cert, err := c.RevokeCertificate(cmd.Context(), args[0], r)
		if err != nil {
			return apiError(err)
		}
		return o.printCertificate(cmd, cert)
	}
	cmd.Flags().StringVar(&reason, "reason", "unspecified", "unspecified, key-compromise, affiliation-changed, superseded or cessation-of-operation")
	return cmd
}

func sslDeleteCmd(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use: "delete ID [--yes]", Short: "Remove a certificate (the site serves a self-signed one; no automatic one is ordered again)", Args: cobra.ExactArgs(1),
		ValidArgsFunction: o.completeCertificates,
	}
	yes := yesFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := o.client()
		if err != nil {
			return err
		}
		if err := confirm(cmd, *yes, "delete certificate "+args[0]); err != nil {
			return err
		}
		cert, err := c.DeleteCertificate(cmd.Context(), args[0])
		if err != nil {
			return apiError(err)
		}
		return o.printCertificate(cmd, cert)
	}
	return cmd
}

// maxPEMFile bounds what install reads of a file (the server refuses more
// than 64 KiB anyway).
const maxPEMFile = 1 << 20

func readPEMFile(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", cmdline.Usagef("--%s: %v", flag, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxPEMFile {
		return "", cmdline.Usagef("--%s: %s is not a PEM file of at most 1 MiB", flag, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", cmdline.Usagef("--%s: %v", flag, err)
	}
	return string(b), nil
}

func sslInstallCmd(o *ctlOptions) *cobra.Command {
	var certFile, keyFile, chainFile string
	var untrusted bool
	cmd := &cobra.Command{
		Use:               "install DOMAIN --cert FILE --key FILE [--chain FILE] [--allow-untrusted]",
		Short:             "Install a certificate bought elsewhere (the key is sealed to the site's node)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			if certFile == "" || keyFile == "" {
				return cmdline.Usagef("--cert and --key are required")
			}
			in := client.InstallCertificateInput{Domain: args[0], AllowUntrusted: untrusted}
			var err error
			if in.CertificatePEM, err = readPEMFile("cert", certFile); err != nil {
				return err
			}
			if in.PrivateKeyPEM, err = readPEMFile("key", keyFile); err != nil {
				return err
			}
			if in.ChainPEM, err = readPEMFile("chain", chainFile); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			cert, err := c.InstallCertificate(cmd.Context(), in)
			if err != nil {
				return apiError(err)
			}
			return o.printCertificate(cmd, cert)
		},
	}
	cmd.Flags().StringVar(&certFile, "cert", "", "the certificate (PEM; intermediates may follow it)")
	cmd.Flags().StringVar(&keyFile, "key", "", "the private key (PEM file; never an argument)")
	cmd.Flags().StringVar(&chainFile, "chain", "", "the intermediate certificates (PEM)")
	cmd.Flags().BoolVar(&untrusted, "allow-untrusted", false, "accept a chain that does not verify to a trusted root (admins)")
	return cmd
}

func onOff(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, cmdline.Usagef("%q: want on or off", s)
}

func (o *ctlOptions) printTLSDomain(cmd *cobra.Command, d *client.TLSDomain) error {
	return o.print(cmd.OutOrStdout(), d, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "DOMAIN\tSTATE\tHTTPS REDIRECT\tHSTS MAX-AGE")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", d.Name, d.State, yesNo(d.HTTPSRedirect), d.HSTSMaxAge)
	})
}

func sslRedirectCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "redirect DOMAIN on|off", Short: "Redirect a domain's plain HTTP to HTTPS (ACME challenges excepted)", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			on, err := onOff(args[1])
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			d, err := c.SetHTTPSRedirect(cmd.Context(), args[0], on)
			if err != nil {
				return apiError(err)
			}
			return o.printTLSDomain(cmd, d)
		},
	}
}

// maxHSTS mirrors the server's bound (graph.MaxHSTSMaxAge): two years.
const maxHSTS = 2 * 365 * 24 * 3600

// hstsMaxAge reads MAXAGE: seconds, a duration (8760h), or off.
func hstsMaxAge(s string) (int, error) {
	if strings.EqualFold(s, "off") {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		d, derr := time.ParseDuration(s)
		if derr != nil {
			return 0, cmdline.Usagef("MAXAGE %q: give seconds (31536000), a duration (8760h) or off", s)
		}
		n = int(d / time.Second)
	}
	if n < 0 || n > maxHSTS {
		return 0, cmdline.Usagef("MAXAGE %d: give 0 (off) to %d seconds (two years)", n, maxHSTS)
	}
	return n, nil
}

func sslHSTSCmd(o *ctlOptions) *cobra.Command {
	return &cobra.Command{
		Use: "hsts DOMAIN MAXAGE", Short: "Send Strict-Transport-Security with max-age MAXAGE seconds (0 or off: not sent)", Args: cobra.ExactArgs(2),
		ValidArgsFunction: o.completeZones,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := hstsMaxAge(args[1])
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			d, err := c.SetHSTS(cmd.Context(), args[0], n)
			if err != nil {
				return apiError(err)
			}
			return o.printTLSDomain(cmd, d)
		},
	}
}

func sslAutoRenewCmd(o *ctlOptions) *cobra.Command {
	cmd := o.certCall("auto-renew ID on|off", "Turn automatic renewal on or off", 2, func(ctx context.Context, c *client.Client, args []string) (*client.Certificate, error) {
		on, err := onOff(args[1])
		if err != nil {
			return nil, err
		}
		return c.SetAutoRenew(ctx, args[0], on)
	})
	return cmd
}

// completeCertificates completes a certificate id.
func (o *ctlOptions) completeCertificates(cmd *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return o.completeNames(0, func(ctx context.Context, c *client.Client, _ []string, prefix string) ([]string, error) {
		certs, _, err := c.Certificates(ctx, client.CertificateFilter{}, 200, "")
		ids := make([]string, 0, len(certs))
		for _, cert := range certs {
			if strings.HasPrefix(cert.ID, prefix) {
				ids = append(ids, cert.ID)
			}
		}
		return ids, err
	})(cmd, args, prefix)
}
