#!/bin/sh
# Print the Debian mirror this host's apt already uses (its own sources,
# whatever their format), or debootstrap's default when it has none:
# never a host name written into the repository, so a local mirror works.
#   DEBIAN_MIRROR=URL overrides.
if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; exit 0; fi
uri=$(apt-get indextargets --format '$(REPO_URI)' 'Label: Debian' 2>/dev/null | head -n1)
# empty: debootstrap picks its own default mirror
echo "${uri%/}"
