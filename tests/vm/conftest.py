import os

# vm_suite.py runs inside the test VM (tests/vm/in-vm.sh sets
# SOCKTRACE_TEST_CONFIG); on the host, test_vm.py boots that VM.
collect_ignore = [] if os.environ.get("SOCKTRACE_TEST_CONFIG") else ["vm_suite.py"]
