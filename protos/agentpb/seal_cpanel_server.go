package agentpb

// CpanelServerPasswordSealContext is the seal context of the SSH password
// a node uses to log in as user on an old cPanel server host: bound to
// both, so a sealed password cannot be sent to another server.
func CpanelServerPasswordSealContext(user, host string) string {
	return "npanel/cpanel-server-password/" + user + "@" + host
}

// CpanelServerKeySealContext is the seal context of the SSH private key
// a node uses to log in as user on host.
func CpanelServerKeySealContext(user, host string) string {
	return "npanel/cpanel-server-key/" + user + "@" + host
}
