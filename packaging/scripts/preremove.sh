#!/bin/sh
# On removal (not upgrade) stops and disables the units. deb passes
# "remove"/"upgrade"/..., rpm the number of versions left after (0: erase).
set -e

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now npanel-server.service npanel-agent.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
