package graph

import (
	"crypto/x509"
	"time"
)

// SetCertificateRoots makes installCertificate verify chains to pool
// instead of the system's roots, until the returned func restores them.
func SetCertificateRoots(pool *x509.CertPool) (restore func()) {
	tlsHooks.Lock()
	defer tlsHooks.Unlock()
	old := tlsHooks.roots
	tlsHooks.roots = func() (*x509.CertPool, error) { return pool, nil }
	return func() {
		tlsHooks.Lock()
		defer tlsHooks.Unlock()
		tlsHooks.roots = old
	}
}

// SetCertificateOrderRate sets the order rate limit of gates made from
// now on (every, burst per user and per certificate), until the returned
// func restores it.
func SetCertificateOrderRate(every time.Duration, burst, burstPerCert int) (restore func()) {
	tlsHooks.Lock()
	defer tlsHooks.Unlock()
	e, b, bc := tlsHooks.every, tlsHooks.burst, tlsHooks.burstCert
	tlsHooks.every, tlsHooks.burst, tlsHooks.burstCert = every, burst, burstPerCert
	return func() {
		tlsHooks.Lock()
		defer tlsHooks.Unlock()
		tlsHooks.every, tlsHooks.burst, tlsHooks.burstCert = e, b, bc
	}
}

// SetCertificateOrdersPerWeek sets how many times a user may order one
// certificate a week, until the returned func restores it.
func SetCertificateOrdersPerWeek(n int) (restore func()) {
	tlsHooks.Lock()
	defer tlsHooks.Unlock()
	old := tlsHooks.perWeek
	tlsHooks.perWeek = n
	return func() {
		tlsHooks.Lock()
		defer tlsHooks.Unlock()
		tlsHooks.perWeek = old
	}
}

// SetCertificateSubscriptionRecheck sets how often certificateEvents
// subscriptions made from now on recheck their caller, until the returned
// func restores it.
func SetCertificateSubscriptionRecheck(every time.Duration) (restore func()) {
	tlsHooks.Lock()
	defer tlsHooks.Unlock()
	old := tlsHooks.recheck
	tlsHooks.recheck = every
	return func() {
		tlsHooks.Lock()
		defer tlsHooks.Unlock()
		tlsHooks.recheck = old
	}
}

// SetBackupSubscriptionRecheck sets how often backupEvents subscriptions
// made from now on recheck their caller, until the returned func
// restores it.
func SetBackupSubscriptionRecheck(every time.Duration) (restore func()) {
	backupHooks.Lock()
	defer backupHooks.Unlock()
	old := backupHooks.recheck
	backupHooks.recheck = every
	return func() {
		backupHooks.Lock()
		defer backupHooks.Unlock()
		backupHooks.recheck = old
	}
}
