#!/bin/sh
# Inside the bookworm userland (tests/distros/in-chroot.sh), on this
# machine's kernel, whose headers no Debian mirror has: provision as
# `vagrant up` does, then show socktrace working (tests/distros).
set -eu
echo "SOCKTRACE-PROVISION kernel $(uname -r)"
sh /socktrace/vagrant/provision.sh /socktrace
echo "SOCKTRACE-PROVISION done"
SOCKTRACE=/usr/local/bin/socktrace python3 - <<'PY'
import socket, sys
sys.path.insert(0, "/socktrace/tests/kernel")
from helpers import Socktrace, listener
st = Socktrace()
ls = listener(v6only=0)
client = socket.create_connection(("127.0.0.1", ls.getsockname()[1]))
ls.accept()
rec = st.wait_for(lambda r: r["type"] == "accept" and r["lport"] == ls.getsockname()[1])[0]
assert st.stop() == 0
print(f"SOCKTRACE-PROVISION traced: probe={st.ready['probe']} offsets={st.ready['offsets']} "
      f"mapped={rec['mapped']} sock_family={rec['sock_family']} rport={rec['rport']} "
      f"client_port={client.getsockname()[1]}")
PY
