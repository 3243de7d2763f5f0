#!/bin/sh
# A fake job for the integration tests: records its own start and end in
# $JOBLOG (one short O_APPEND write each, so concurrent jobs do not interleave).
# usage: job.sh NAME SECONDS
set -eu
printf 'start %s %s\n' "$1" "$(date +%s%N)" >>"$JOBLOG"
sleep "$2"
printf 'end %s %s\n' "$1" "$(date +%s%N)" >>"$JOBLOG"
