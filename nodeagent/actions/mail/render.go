package mail

import (
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/npanel/npanel/nodeagent/platform"
)

// listenAddr is one parsed listener: host "" means every address.
type listenAddr struct {
	host string
	port int
}

// parseListen reads a profile listen address (ip:port or :port).
func parseListen(what, s string) (listenAddr, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return listenAddr{}, fmt.Errorf("%s listen %q: %w", what, s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return listenAddr{}, fmt.Errorf("%s listen %q: bad port", what, s)
	}
	if h != "" {
		if ip := net.ParseIP(h); ip == nil {
			return listenAddr{}, fmt.Errorf("%s listen %q: the host must be an IP address", what, s)
		}
	}
	return listenAddr{host: h, port: port}, nil
}

// dial is where a probe or a local client connects to l.
func (l listenAddr) dial() string {
	h := l.host
	if h == "" || h == "0.0.0.0" {
		h = "127.0.0.1"
	} else if h == "::" {
		h = "::1"
	}
	return net.JoinHostPort(h, strconv.Itoa(l.port))
}

// exim renders "[ip]:port" entries for local_interfaces. Exim takes
// 0.0.0.0 and ::0 for the wildcards but not "::", whose socket it then
// fails to bind beside 0.0.0.0's.
func (l listenAddr) exim() []string {
	if l.host == "" {
		return []string{fmt.Sprintf("[0.0.0.0]:%d", l.port), fmt.Sprintf("[::0]:%d", l.port)}
	}
	return []string{fmt.Sprintf("[%s]:%d", l.host, l.port)}
}

// dovecot renders an inet_listener address value.
func (l listenAddr) dovecot() string {
	if l.host == "" {
		return "*, ::"
	}
	return l.host
}

// listeners are the node's parsed mail listen addresses.
type listeners struct {
	smtp, submission, smtps, imap, imaps, pop3, pop3s listenAddr
}

func parseListeners(p *platform.Profile) (listeners, error) {
	var l listeners
	var err error
	for _, x := range []struct {
		what string
		s    string
		to   *listenAddr
	}{
		{"smtp", p.SMTPListen, &l.smtp}, {"submission", p.SubmissionListen, &l.submission},
		{"smtps", p.SMTPSListen, &l.smtps}, {"imap", p.IMAPListen, &l.imap},
		{"imaps", p.IMAPSListen, &l.imaps}, {"pop3", p.POP3Listen, &l.pop3},
		{"pop3s", p.POP3SListen, &l.pop3s},
	} {
		if *x.to, err = parseListen(x.what, x.s); err != nil {
			return l, err
		}
	}
	return l, nil
}

// configInput is everything the main configurations depend on.
type configInput struct {
	Node     string
	Paths    platform.MailPaths
	Listen   listeners
	Relay    string // host:port or ""
	Mailname string
	// Antivirus: clamd (on Paths.ClamdSocket) scans every message at DATA.
	Antivirus bool
	// QuotaWarning is the program and fixed arguments Dovecot's
	// quota-warning service runs at 90% (the agent's own binary, see
	// QuotaWarningMain); none when empty.
	QuotaWarning []string
}

// renderExim renders Exim's main configuration. Everything an action
// changes lives in lookup files that Exim reads per lookup, so the main
// configuration changes only with the node's settings (listeners, relay):
// mailbox and domain changes need no reload.
//
// Exim's taint rules: file names are built only from lookup results
// ($domain_data from the dsearch of DomainsDir, dsearch results for DKIM),
// never from $domain or $local_part themselves.
func renderExim(in configInput) (string, error) {
	m := in.Paths
	var ifaces []string
	var ports []string
	for _, l := range []listenAddr{in.Listen.smtp, in.Listen.submission, in.Listen.smtps} {
		ifaces = append(ifaces, l.exim()...)
		ports = append(ports, strconv.Itoa(l.port))
	}
	for _, s := range []string{in.Node, in.Mailname} {
		if strings.ContainsAny(s, "\n\r$\\{}") {
			return "", fmt.Errorf("exim: %q cannot be written to the configuration", s)
		}
	}
	remote := `remote:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  ignore_target_hosts = 0.0.0.0 : 127.0.0.0/8
  no_more
`
	relayTransport := ""
	if in.Relay != "" {
		h, port, err := net.SplitHostPort(in.Relay)
		if err != nil || net.ParseIP(h) == nil && strings.ContainsAny(h, " :;\n$\\{}") {
			return "", fmt.Errorf("exim: mail relay %q: want host:port", in.Relay)
		}
		if _, err := strconv.Atoi(port); err != nil {
			return "", fmt.Errorf("exim: mail relay %q: bad port", in.Relay)
		}
		remote = `remote:
  driver = accept
  domains = ! +local_domains
  transport = remote_smtp
  no_more
`
		relayTransport = fmt.Sprintf("  hosts = %s\n  hosts_override\n  port = %s\n  allow_localhost\n", h, port)
	}
	domains := m.DomainsDir
	avACL, avScanner := "", ""
	if in.Antivirus {
		if !filepath.IsAbs(m.ClamdSocket) || strings.ContainsAny(m.ClamdSocket, " \t\r\n:$\\{}") {
			return "", fmt.Errorf("exim: clamd socket %q cannot be written to the configuration", m.ClamdSocket)
		}
		// Over the unix socket Exim sends clamd the scan file's name (its
		// user is in Exim's group, see setupClamd). A failed scan, clamd
		// down included, defers the message (no defer_ok) rather than
		// passing it.
		avScanner = fmt.Sprintf("av_scanner = clamd:%s\n", m.ClamdSocket)
		avACL = "  deny    malware = *\n          message = message rejected: it contains malware ($malware_name)\n"
	}
	from := ownerOf(domains, "${domain:$item}")
	return fmt.Sprintf(`# Written by the npanel agent; changes are overwritten.
primary_hostname = %[1]s
spool_directory = %[2]s
log_file_path = %[3]s
pid_file_path = %[4]s/exim.pid
exim_user = %[5]s
exim_group = %[6]s
never_users = root
keep_environment =
daemon_smtp_ports = %[7]s
local_interfaces = <; %[8]s
tls_on_connect_ports = %[9]d
tls_advertise_hosts = *
# By SNI: the host's own pair when sni.map lists it (the path is the
# map's, the client's name only its key), else the node's.
tls_certificate = ${if def:tls_in_sni{${lookup{${lc:$tls_in_sni}}lsearch{%[10]s/sni.map}{$value.crt}{%[10]s/cert.pem}}}{%[10]s/cert.pem}}
tls_privatekey = ${if def:tls_in_sni{${lookup{${lc:$tls_in_sni}}lsearch{%[10]s/sni.map}{$value.key}{%[10]s/key.pem}}}{%[10]s/key.pem}}
domainlist local_domains = dsearch,ret=full,filter=dir;%[11]s
spamd_address = %[17]s
%[19]sacl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data
acl_not_smtp = acl_check_not_smtp
# A program on the node (sendmail -f, PHP's mail()) may set its envelope
# sender, else Exim ignores -f and sends as login@node, whose bounces
# never reach the account. acl_check_not_smtp refuses a domain hosted
# here for another account; local SMTP (-bs) is held to it at RCPT.
untrusted_set_sender = *
host_lookup =
rfc1413_hosts =
deliver_drop_privilege = true
message_size_limit = 50M
ignore_bounce_errors_after = 2d
timeout_frozen_after = 7d
queue_run_max = 5
smtp_accept_max = 200
smtp_connect_backlog = 256
smtp_accept_queue_per_connection = 0

begin acl

acl_check_rcpt:
  deny    local_parts = ^.*[@%%!/|] : ^\\.
          message = restricted characters in address
  # A suspended account's domains: inbound mail waits, it is not bounced.
  defer   domains = +local_domains
          condition = ${if exists{$domain_data/suspended}}
          message = mailbox temporarily unavailable
  # An authenticated user sends as itself only: DKIM signs by the
  # envelope sender's domain, so another account's domain is refused.
  deny    authenticated = *
          condition = ${if !eqi{$sender_address}{$authenticated_id}}
          message = sender address must be the address you logged in as
  deny    authenticated = *
          ratelimit = %[21]d / 1h / per_rcpt / strict / $authenticated_id
          message = sending rate limit exceeded for $authenticated_id
  # Local SMTP (-bs) from an account's program: no host, no AUTH, and
  # untrusted_set_sender lets it name its sender, so the sender rule of
  # acl_check_not_smtp applies here too.
  deny    condition = ${if !def:sender_host_address}
          !authenticated = *
          condition = ${if !or{{=={$caller_uid}{0}}{=={$caller_uid}{$exim_uid}}}}
          condition = %[24]s
          message = %[25]s
  accept  authenticated = *
          domains = ! +local_domains
          control = submission/sender_retain
  # Every account's programs can reach this node's own addresses, and
  # the published SPF policies of all its domains name them: without AUTH
  # from there, a sender in a domain hosted here would be one account
  # speaking for another (or passing SPF as it). Mailboxes log in.
  deny    !authenticated = *
          hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          !senders = :
          sender_domains = +local_domains
          message = $sender_address_domain is hosted here, so log in (SMTP AUTH) to send as $sender_address
  # Dovecot's own messages (Sieve vacation replies) come from loopback
  # with a null sender. Every account's programs can reach loopback and
  # the node's own addresses too (one list for all "this node" rules),
  # so the path is narrow: one recipient per message, a node-wide rate,
  # and DATA requires an automatic reply's headers and size. To a local
  # mailbox the reply still goes through recipient verification below.
  deny    hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          senders = :
          condition = ${if >{$rcpt_count}{1}}
          message = an automatic reply has one recipient
  deny    hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          senders = :
          ratelimit = 600 / 1h / strict / per_rcpt / loopback-automatic-replies
          message = automatic reply rate exceeded
  accept  hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          senders = :
          domains = ! +local_domains
          set acl_m_autoreply = 1
  warn    hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          senders = :
          set acl_m_autoreply = 1
  # SPF for mail from other servers to our domains: a sender domain whose
  # policy says this host may not send for it (-all) is refused; pass,
  # softfail and neutral add a Received-SPF header at DATA. A DNS failure
  # (temperror) or no policy lets the message through.
  deny    !authenticated = *
          domains = +local_domains
          !hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          spf = fail
          message = SPF check failed: $sender_host_address is not allowed to send mail from ${if def:sender_address_domain{$sender_address_domain}{$sender_helo_name}}
          log_message = SPF fail for ${if def:sender_address_domain{$sender_address_domain}{$sender_helo_name}} from $sender_host_address
  warn    !authenticated = *
          domains = +local_domains
          !hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          spf = pass:softfail:neutral
          set acl_m_spf = $spf_received
  # libspf2 answers "pass" for every loopback client ("localhost is always
  # allowed"), and every domain's policy names this node's addresses, yet
  # an account's program there is no more trusted than the Internet: its
  # sender (null senders too, whose HELO would pass) is marked unverified
  # rather than checked.
  warn    !authenticated = *
          domains = +local_domains
          hosts = <; 127.0.0.0/8 ; ::1 ; @[]
          set acl_m_spf = Received-SPF: softfail ($primary_hostname: $sender_host_address is on this node, where any account's program may connect; the sender is not verified) client-ip=$sender_host_address; envelope-from=$sender_address;
  # $domain_data is taken before verification resets it.
  require message = relay not permitted
          domains = +local_domains
          set acl_m_rdom = $domain_data
  require verify = recipient
  # DATA applies one domain's spam settings and its account's Bayes
  # database to the whole message, so a message from another server
  # carries recipients of one local domain: the others are deferred
  # (452) and come in the sender's next transaction, each domain judged
  # by its own settings. Domains judged alike (the same settings and
  # account, or the filter off) share a message. A mailbox's own
  # submission is not split (mail clients give up on a 452): to several
  # local domains judged apart it is not scanned.
  warn    set acl_m_rkey = %[20]s
  defer   !authenticated = *
          condition = ${if and{{def:acl_m_dom}{!eq{$acl_m_key}{$acl_m_rkey}}}}
          message = 452 4.5.3 one recipient domain per message here; send again for the rest
  warn    condition = ${if and{{def:acl_m_dom}{!eq{$acl_m_key}{$acl_m_rkey}}}}
          set acl_m_multi = 1
  warn    condition = ${if !def:acl_m_dom}
          set acl_m_dom = $acl_m_rdom
          set acl_m_key = $acl_m_rkey
  accept

acl_check_data:
  warn    condition = ${if def:acl_m_spf}
          add_header = $acl_m_spf
  # DKIM signs by the envelope sender, which RCPT ties to the login; the
  # From: header a recipient sees is held to the login's account too.
  deny    authenticated = *
          condition = %[22]s
          message = %[23]s
  # Local SMTP (-bs), as at RCPT.
  deny    condition = ${if !def:sender_host_address}
          !authenticated = *
          condition = ${if !or{{=={$caller_uid}{0}}{=={$caller_uid}{$exim_uid}}}}
          condition = %[26]s
          message = %[27]s
  deny    condition = ${if eq{$acl_m_autoreply}{1}}
          condition = ${if or{{!match{$h_Auto-Submitted:}{\N^\s*auto-replied\N}}{!def:h_In-Reply-To:}{>{$message_size}{65536}}}}
          message = relay not permitted
%[18]s  accept  condition = ${if !def:acl_m_dom}
  accept  condition = ${if eq{$acl_m_multi}{1}}
  accept  condition = ${if !eq{${lookup{enabled}lsearch{$acl_m_dom/spam}{$value}{no}}}{yes}}
  # spamd scores the message with the Bayes database of the domain's
  # account (the spamd user name); ":true" lets mail through when spamd
  # is down or not installed. $spam_score_int is in tenths, as the
  # settings.
  accept  !spam = ${if exists{$acl_m_dom/owner}{${readfile{$acl_m_dom/owner}{}}}{nobody}}:true
  accept  condition = ${if <{$spam_score_int}{${lookup{score}lsearch{$acl_m_dom/spam}{$value}{50}}}}
  deny    condition = ${if eq{${lookup{action}lsearch{$acl_m_dom/spam}}}{reject}}
          message = message rejected as spam (score $spam_score)
  warn    add_header = X-Spam-Flag: YES
          add_header = X-Spam-Score: $spam_score
          add_header = X-Spam-Report: $spam_bar
  warn    condition = ${if eq{${lookup{action}lsearch{$acl_m_dom/spam}}}{junk_folder}}
          add_header = X-NPanel-Spam-Folder: Junk
  accept

# Mail a program on the node submits without SMTP (sendmail, PHP's
# mail()). Root and Exim itself (bounces) are trusted callers; an
# account's user sends at the rate a mailbox may, and never as a domain
# hosted here for another account: its own domains, the node's name and
# foreign domains stay open, as on the Internet.
acl_check_not_smtp:
  # Exim mails a refusal below to the envelope sender the caller chose,
  # with the refused message attached: to another account's address, or
  # past the rate limit to anyone. The report (Exim's own, as its user)
  # is dropped; the caller sees its exit status (the text with -oep) and
  # the log keeps the reason.
  discard condition = ${if =={$caller_uid}{$exim_uid}}
          senders = :
          condition = ${if eq{$h_Subject:}{Mail failure - rejected by local scanning code}}
          condition = ${if match{$message_body}{\N^A message that you sent was rejected by the local scanning code\N}}
          log_message = report of a refused local submission dropped
  accept  condition = ${if or{{=={$caller_uid}{0}}{=={$caller_uid}{$exim_uid}}}}
  deny    ratelimit = %[21]d / 1h / per_rcpt / strict / uid-$caller_uid
          message = sending rate limit exceeded for local user $sender_ident (at most %[21]d recipients an hour)
  deny    condition = %[24]s
          message = %[25]s
  deny    condition = %[26]s
          message = %[27]s
  accept

begin routers

mailbox:
  driver = accept
  domains = +local_domains
  local_parts = lsearch;$domain_data/mailboxes
  transport = dovecot_lmtp

alias:
  driver = redirect
  domains = +local_domains
  data = ${lookup{$local_part}lsearch{$domain_data/aliases}}
  allow_fail
  allow_defer

catchall:
  driver = redirect
  domains = +local_domains
  data = ${lookup{*}lsearch{$domain_data/aliases}}
  allow_fail
  allow_defer
  no_more

%[12]s
begin transports

remote_smtp:
  driver = smtp
%[13]s  # Only what a mailbox or the domain's own account submitted is signed,
  # as its own domain: forwarded mail keeps its original sender, which may
  # name any domain hosted here. A local submission (sendmail, PHP's
  # mail()) names a domain hosted here only when it is its account's
  # (acl_check_not_smtp); forwarding keeps the protocol it came by.
  dkim_domain = ${if or{{and{{def:authenticated_id}{eqi{$sender_address}{$authenticated_id}}}}{match{$received_protocol}{\N^local\N}}}{${lookup{$sender_address_domain}dsearch,filter=dir{%[11]s}{${if exists{%[11]s/$value/dkim}{$value}}}}}}
  dkim_selector = ${lookup{selector}lsearch{%[11]s/$dkim_domain/dkim}}
  dkim_private_key = %[14]s/$dkim_domain.$dkim_selector.key
  dkim_canon = relaxed

dovecot_lmtp:
  driver = lmtp
  socket = %[15]s/lmtp-exim
  batch_max = 200
  user = %[5]s

begin retry

*   *   F,2h,15m; G,16h,1h,1.5; F,4d,6h

begin authenticators

# AUTH only over TLS and never on the MX port. Dovecot checks the
# password; a mailbox whose logins are off (listed in its domain's nologin
# file) or a suspended account's domain is refused here too, since
# Dovecot's auth-client protocol reports nologin as a success.
dovecot_plain:
  driver = dovecot
  public_name = PLAIN
  server_socket = %[15]s/auth-exim
  server_set_id = $auth1
  server_advertise_condition = ${if and{{def:tls_in_cipher}{!={$received_port}{%[16]d}}}}
  server_condition = ${lookup{${domain:$auth1}}dsearch,ret=full,filter=dir{%[11]s}{${if or{{exists{$value/suspended}}{eq{${lookup{${local_part:$auth1}}lsearch{$value/nologin}{y}{n}}}{y}}}{no}{yes}}}{no}}

dovecot_login:
  driver = dovecot
  public_name = LOGIN
  server_socket = %[15]s/auth-exim
  server_set_id = $auth1
  server_advertise_condition = ${if and{{def:tls_in_cipher}{!={$received_port}{%[16]d}}}}
  server_condition = ${lookup{${domain:$auth1}}dsearch,ret=full,filter=dir{%[11]s}{${if or{{exists{$value/suspended}}{eq{${lookup{${local_part:$auth1}}lsearch{$value/nologin}{y}{n}}}{y}}}{no}{yes}}}{no}}
`, in.Mailname, m.SpoolDir, m.EximLogPat, m.RunDir, m.EximUser, m.EximGroup,
		strings.Join(dedupe(ports), " : "), strings.Join(ifaces, " ; "), in.Listen.smtps.port,
		m.TLSDir, domains, remote, relayTransport, m.DKIMDir, m.DovecotBaseDir, in.Listen.smtp.port, m.SpamdSocket, avACL, avScanner,
		spamKey, sendRate,
		"${if forany{${addresses:$h_From:}}{or{{eq{"+from+"}{}}{!eq{"+from+"}{"+ownerOf(domains, "${domain:$authenticated_id}")+"}}}}}",
		"550 5.7.1 the From: header must be an address in one of the domains of the account you logged in to",
		"${if and{{def:sender_address_domain}{"+foreignToCaller(domains, "$sender_address_domain")+"}}}",
		"sender domain $sender_address_domain is not one of your account's domains",
		"${if forany{${addresses:$h_From:}}{"+foreignToCaller(domains, "${domain:$item}")+"}}",
		"the From: header must not be an address in a domain hosted here for another account"), nil
}

// sendRate is how many recipients an hour one mailbox (authenticated
// SMTP) or one account's Linux user (local submission) may send to.
const sendRate = 300

// ownerOf expands to the account owning the hosted domain dom (an
// expansion), or "" when the domain is not hosted here. filter=subdir
// keeps "." and ".." from naming DomainsDir or its parent.
func ownerOf(domains, dom string) string {
	return "${lookup{${lc:" + dom + "}}dsearch,ret=full,filter=subdir{" + domains +
		"}{${if exists{$value/owner}{${readfile{$value/owner}{}}}}}}"
}

// foreignToCaller is a condition (for ${if}): dom is hosted here and its
// account's Linux user (the owner file names it) is not the calling
// process's user.
func foreignToCaller(domains, dom string) string {
	return "eq{${lookup{${lc:" + dom + "}}dsearch,ret=full,filter=subdir{" + domains +
		"}{${if exists{$value/owner}{${if eq{${extract{2}{:}{${lookup passwd{${readfile{$value/owner}{}}}}}}}{$caller_uid}{mine}{foreign}}}{mine}}}{mine}}}{foreign}"
}

// spamKey expands, for the recipient domain in $acl_m_rdom, to what DATA
// judges its mail by: its spam settings and, when the filter is on, its
// account (whose Bayes database spamd uses). Recipients whose keys agree
// can share one message.
const spamKey = "${if eq{${lookup{enabled}lsearch{$acl_m_rdom/spam}{$value}{no}}}{yes}" +
	"{${readfile{$acl_m_rdom/spam}{,}}${if exists{$acl_m_rdom/owner}{${readfile{$acl_m_rdom/owner}{}}}}}{off}}"

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// renderDovecot renders Dovecot's main configuration. Users come from one
// passwd-file per mailbox (UsersDir/DOMAIN/LOCAL); the file names hold %d and %n,
// which Dovecot fills from the login name only after
// auth_username_chars refused '/' in it.
func renderDovecot(in configInput) (string, error) {
	m := in.Paths
	l := in.Listen
	warn, warnService := "", ""
	if len(in.QuotaWarning) > 0 {
		for _, a := range in.QuotaWarning {
			if !dovecotSafeArg(a) {
				return "", fmt.Errorf("dovecot: quota warning argument %q cannot be written to the configuration", a)
			}
		}
		// Dovecot's script helper runs the program (no shell) with
		// "90 USER" appended. The socket is opened by the mail processes,
		// which run as every account's user: the program trusts none of
		// its arguments and re-checks the quota itself.
		warn = "  quota_warning = storage=90%% quota-warning 90 %u\n"
		warnService = fmt.Sprintf(`service quota-warning {
  executable = script %s
  # A Go program reserves more address space than the default 256M
  # limit allows before it starts; its real use is a few MB.
  vsz_limit = 0
  unix_listener quota-warning {
    mode = 0666
  }
}
`, strings.Join(in.QuotaWarning, " "))
	}
	paths := ""
	if m.Supervised {
		paths = fmt.Sprintf("base_dir = %s\ninstance_name = %s\nlog_path = %s\nstate_dir = %s\n",
			m.DovecotBaseDir, m.DovecotInstance, m.DovecotLog, m.DovecotStateDir)
	}
	return fmt.Sprintf(`# Written by the npanel agent; changes are overwritten.
%[1]sprotocols = imap pop3 lmtp
listen = *
ssl = yes
ssl_cert = <%[2]s/cert.pem
ssl_key = <%[2]s/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
# Dovecot checks these characters before auth_username_format lower-cases
# the name: without the upper-case letters, ALICE@EXAMPLE.COM is refused.
auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@
auth_username_format = %%Lu
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 0
# A cached login still verifies the password against the cached bcrypt
# hash; workers do it in parallel instead of the single auth process.
auth_cache_verify_password_with_worker = yes
mail_location = maildir:~/Maildir
first_valid_uid = 1000
mail_plugins = quota
lmtp_rcpt_check_quota = yes
recipient_delimiter =
# The login name's parts are path components below. Dovecot refuses '/'
# and ".." in them but not "." or nothing: "x@.", "x@" and "x" would read
# %[3]s/x. A login without a domain gets one that is never served, and
# the deny list refuses "", "." and ".." as a domain or local part before
# any passwd-file is opened.
auth_default_realm = %[18]s
passdb {
  driver = passwd-file
  args = username_format=d-%%d %[19]s
  deny = yes
}
passdb {
  driver = passwd-file
  args = username_format=n-%%n %[19]s
  deny = yes
}
passdb {
  driver = passwd-file
  args = scheme=BLF-CRYPT username_format=%%n %[3]s/%%d/%%n
}
userdb {
  driver = passwd-file
  args = username_format=%%n %[3]s/%%d/%%n
}
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=0
  quota_status_overquota = 552 5.2.2 Mailbox is full
%[16]s  sieve = file:~/sieve;active=~/.dovecot.sieve
  sieve_before = %[4]s/junk.sieve
  sieve_vacation_dont_check_recipient = yes
}
# Replies Sieve sends go through this node's Exim, never a sendmail
# binary (that would be the host's own MTA).
submission_host = %[15]s
protocol lmtp {
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@%[11]s
}
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
namespace inbox {
  inbox = yes
  mailbox Junk {
    auto = subscribe
    special_use = \Junk
  }
  mailbox Sent {
    auto = subscribe
    special_use = \Sent
  }
  mailbox Trash {
    auto = subscribe
    special_use = \Trash
  }
  mailbox Drafts {
    auto = subscribe
    special_use = \Drafts
  }
}
service imap-login {
  inet_listener imap {
    address = %[5]s
    port = %[6]d
  }
  inet_listener imaps {
    address = %[7]s
    port = %[8]d
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = %[9]s
    port = %[10]d
  }
  inet_listener pop3s {
    address = %[12]s
    port = %[13]d
    ssl = yes
  }
}
service lmtp {
  # LMTP runs as root and takes each recipient's uid as its effective id,
  # keeping the last one while idle: a process per connection leaves no
  # process holding a deleted account's uid.
  service_count = 1
  unix_listener lmtp {
    mode = 0600
  }
  unix_listener lmtp-exim {
    mode = 0660
    group = %[14]s
  }
}
service auth {
  unix_listener auth-exim {
    mode = 0660
    group = %[14]s
  }
}
%[17]s
# Hosts' own certificates by SNI (local_name blocks).
!include_try %[2]s/sni-dovecot.conf
`, paths, m.TLSDir, m.UsersDir, m.SieveDir, l.imap.dovecot(), l.imap.port, l.imaps.dovecot(), l.imaps.port,
		l.pop3.dovecot(), l.pop3.port, in.Mailname, l.pop3s.dovecot(), l.pop3s.port, m.EximGroup, l.smtp.dial(), warn, warnService,
		noRealm, loginDenyFile(m)), nil
}

// noRealm is the domain Dovecot gives a login name without one: .invalid
// is never a mail domain here (RFC 2606).
const noRealm = "no-domain.invalid"

// loginDeny lists the login name parts that would name a directory above
// or at the passwd-files' own (see renderDovecot): d- before a domain, n-
// before a local part, so that an empty one has a key too.
const loginDeny = "d-\nd-.\nd-..\nn-\nn-.\nn-..\n"

// loginDenyFile is where loginDeny is written: beside UsersDir, not in it.
func loginDenyFile(m platform.MailPaths) string {
	return filepath.Join(filepath.Dir(m.UsersDir), "login-deny")
}

// dovecotSafeArg reports whether a can be one word of a Dovecot setting
// value: nothing that splits it, ends the line or the block, or expands.
func dovecotSafeArg(a string) bool {
	return a != "" && !strings.ContainsAny(a, " \t\r\n\"'\\{}$%#")
}

// junkSieve files messages Exim marked for the Junk folder (the domain's
// spam action JUNK_FOLDER) there.
const junkSieve = `require ["fileinto"];
if header :is "X-NPanel-Spam-Folder" "Junk" {
  fileinto "Junk";
  stop;
}
`
