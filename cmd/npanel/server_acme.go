package main

import (
	"github.com/spf13/pflag"

	"github.com/npanel/npanel/controlplane"
)

func addACMEFlags(f *pflag.FlagSet, c *controlplane.ACMEConfig) {
	f.StringVar(&c.DirectoryURL, "acme-directory", controlplane.LetsEncryptDirectory, "ACME directory URL site and mail certificates are ordered from (Let's Encrypt staging or a private ACME server instead); off: order none, sites keep self-signed certificates")
	f.StringVar(&c.Email, "acme-email", "", "contact address of the ACME account")
	f.StringVar(&c.RootCAFile, "acme-root-ca", "", "PEM file of extra roots to trust for the ACME server's HTTPS (a private ACME server such as Pebble); handed to the agents")
	f.StringVar(&c.EABKID, "acme-eab-kid", "", "External Account Binding key id, when the ACME server requires one")
	f.StringVar(&c.EABHMACFile, "acme-eab-hmac-file", "", "file holding the base64url External Account Binding HMAC key")
}

// acmeDirectory turns the flag's "off" into the configuration's empty
// directory.
func acmeDirectory(c *controlplane.ACMEConfig) {
	if c.DirectoryURL == "off" {
		c.DirectoryURL = ""
	}
}
