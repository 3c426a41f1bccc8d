package controlplane

// ACMEConfig is the ACME server every node orders site and mail
// certificates from (--acme-*).
type ACMEConfig struct {
	// DirectoryURL defaults to Let's Encrypt's production directory.
	DirectoryURL string
	Email        string
	// RootCAFile holds extra PEM roots to trust for the directory's HTTPS
	// (a private ACME server such as Pebble); they are handed to agents.
	RootCAFile string
	// EABKID and EABHMACFile are the optional External Account Binding.
	EABKID      string
	EABHMACFile string
}

// LetsEncryptDirectory is the default ACME directory.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"
