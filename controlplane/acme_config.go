package controlplane

import "time"

// ACMEConfig is the ACME server every node orders site and mail
// certificates from (--acme-*).
type ACMEConfig struct {
	// DirectoryURL is the ACME directory; empty turns ordering off (sites
	// keep self-signed certificates, installed ones are served). The
	// server's flag defaults to Let's Encrypt's production directory.
	DirectoryURL string
	Email        string
	// RootCAFile holds extra PEM roots to trust for the directory's HTTPS
	// (a private ACME server such as Pebble); they are handed to agents.
	RootCAFile string
	// EABKID and EABHMACFile are the optional External Account Binding.
	EABKID      string
	EABHMACFile string

	// The certificate controller's timing; zero takes the default. Tests
	// shorten them.
	//
	// RenewSweep is how often certificates whose renewal or retry is due
	// are looked for (one minute); RetryBase and RetryMax bound the
	// backoff of failed attempts (5m·2^n up to 24h).
	RenewSweep time.Duration
	RetryBase  time.Duration
	RetryMax   time.Duration
	// OrderBurst and OrderEvery pace the orders sent to each node (a
	// token bucket: OrderBurst at once, then one per OrderEvery; 10 and
	// 30s), so that a bulk import or a renewal wave stays under the CA's
	// rate limits; an order over the budget is deferred.
	OrderBurst int
	OrderEvery time.Duration
}

// LetsEncryptDirectory is the default ACME directory.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"
