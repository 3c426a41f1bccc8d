#!/bin/sh
# Makes the data directories (the package ships them too; this repairs
# owners and modes after the user was created or an admin changed them),
# then reloads systemd and restarts the units that were running so that an
# upgrade takes effect. Nothing is enabled or started on a fresh install:
# the configuration needs the operator first.
set -e

install -d -m 0755 -o root -g root /var/lib/npanel
install -d -m 0700 -o npanel -g npanel /var/lib/npanel/server
install -d -m 0700 -o root -g root /var/lib/npanel/agent /var/lib/npanel/backups /var/lib/npanel/import
install -d -m 0750 -o root -g npanel /etc/npanel
# The server reads its configuration as npanel; the agent's stays root's.
# An operator may have deleted one (dpkg does not bring a conffile back).
if [ -f /etc/npanel/server.yaml ]; then
	chown root:npanel /etc/npanel/server.yaml
	chmod 0640 /etc/npanel/server.yaml
fi
if [ -f /etc/npanel/agent.yaml ]; then
	chown root:root /etc/npanel/agent.yaml
	chmod 0600 /etc/npanel/agent.yaml
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
	systemctl try-restart npanel-server.service npanel-agent.service >/dev/null || true
fi
exit 0
