package agentpb

// DatabasePasswordSealPrefix starts the context a database user's password
// is sealed with (pki.Seal) in EnsureDatabaseUserAction.sealed_password: the
// full context is DatabasePasswordSealContext(user), so that a password
// sealed for one user cannot be replayed onto another. It is part of the
// protocol: the control plane seals with it and the agent opens with it.
const DatabasePasswordSealPrefix = "npanel/db-password/"

// DatabasePasswordSealContext is the seal context of user's password.
func DatabasePasswordSealContext(user string) string { return DatabasePasswordSealPrefix + user }

// MailPasswordSealPrefix starts the context a mailbox password is sealed
// with in EnsureMailboxAction.sealed_password; the full context is
// MailPasswordSealContext(address), so a password sealed for one mailbox
// cannot be replayed onto another.
const MailPasswordSealPrefix = "npanel/mail-password/"

// MailPasswordSealContext is the seal context of address's password.
func MailPasswordSealContext(address string) string { return MailPasswordSealPrefix + address }

// CertificateKeySealContext is the seal context of an installed
// certificate's private key, PKCS#8 DER, for the certificate id (its
// site's domain): InstallCertificateAction.sealed_private_key, and
// CpanelCertificate.sealed_private_key, which a cPanel import installs
// through the same record as it is.
func CertificateKeySealContext(id string) string { return "npanel/certificate-key/" + id }

// AcmeEABSealContext is the seal context of the ACME External Account
// Binding HMAC key (AcmeServer.sealed_eab_hmac).
func AcmeEABSealContext(kid string) string { return "npanel/acme-eab/" + kid }

// BackupPasswordSealContext is the seal context of the restic repository
// password of username's backups.
func BackupPasswordSealContext(username string) string { return "npanel/backup-password/" + username }

// BackupS3SecretSealContext is the seal context of an S3 backup target's
// secret access key.
func BackupS3SecretSealContext(target string) string { return "npanel/backup-s3-secret/" + target }

// MailPasswordHashSealContext is the seal context of a mailbox's password
// hash carried between nodes (EnsureMailboxAction.sealed_password_hash).
func MailPasswordHashSealContext(address string) string {
	return "npanel/mail-password-hash/" + address
}

// DatabasePasswordHashSealContext is the seal context of a database
// user's password hash carried between nodes
// (EnsureDatabaseUserAction.sealed_password_hash).
func DatabasePasswordHashSealContext(user string) string { return "npanel/db-password-hash/" + user }
