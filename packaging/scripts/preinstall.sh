#!/bin/sh
# Creates the system user and group the control plane server runs as. useradd
# and groupadd (Debian's passwd, Alma's shadow-utils) exist on minimal
# systems where adduser may not.
set -e

if ! getent group npanel >/dev/null; then
	groupadd --system npanel
fi
if ! getent passwd npanel >/dev/null; then
	useradd --system --gid npanel --no-create-home \
		--home-dir /var/lib/npanel/server --shell /usr/sbin/nologin \
		--comment "nPanel control plane" npanel
fi
exit 0
