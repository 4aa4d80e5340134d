#!/usr/bin/env bash
# Runs inside the new root filesystem (chroot) while build-image makes it: installs callveil
# into its virtual environment and applies the appliance's defaults. Never run it on a box.
# Usage (from build-image): in-image.sh WHEEL BUILD_DEPENDENCY...
set -euo pipefail
# The build machine's environment (pip settings, CA bundle paths) does not describe this root.
if [ -z "${CALLVEIL_IN_IMAGE:-}" ]; then
  exec env -i CALLVEIL_IN_IMAGE=1 PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root bash "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
wheel=$1
shift
build_deps=("$@")

# a CA bundle for a TLS-inspecting proxy on the build machine's way to PyPI
if [ -f /tmp/in/pip-ca.pem ]; then
  export PIP_CERT=/tmp/in/pip-ca.pem
fi
# tpm2-pytss and systemd-python come as source only: they compile against the image's own
# libtss2 and libsystemd, then the compilers leave again.
python3 -m venv /opt/callveil/venv
/opt/callveil/venv/bin/pip install --no-cache-dir --no-input --disable-pip-version-check "$wheel"
apt-get purge -y -q --autoremove "${build_deps[@]}"

# The root filesystem is read-only on the box, so users, groups and directories are made now.
systemd-sysusers
systemd-tmpfiles --create /usr/lib/tmpfiles.d/callveil.conf
install -d -m 0700 /var/lib/sshd
install -d -m 0755 /data

systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  nftables.service ssh.service callveil.service callveil-retention.timer
# Nobody logs in with a password: root only by key, the console only through recovery media.
passwd --lock root >/dev/null
# Made by openssh-server's installation; each box makes its own at first boot instead.
rm -f /etc/ssh/ssh_host_*
# Each box gets its own machine ID: an empty file tells systemd to make one at boot.
: >/etc/machine-id

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/* /root/.cache
