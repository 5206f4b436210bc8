"""Exit codes (sysexits.h), documented in the README; scripts and systemd rely on them."""

OK = 0
USAGE = 64  # bad command line
DATAERR = 65  # an input file that is not usable audio
NOINPUT = 66  # a missing file or microphone
UNAVAILABLE = 69  # a service the command needs is not there (e.g. no TFLite runtime)
SOFTWARE = 70  # a bug: an unexpected exception
CONFIG = 78  # invalid configuration or model/config mismatch
