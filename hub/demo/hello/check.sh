#!/bin/sh
# The project's check: every file in greetings/ is exactly one non-empty
# line. The hub runs it (`sh check.sh`) on each merge result before main
# moves; exit 0 passes.
count=0
bad=0
for f in greetings/*; do
  [ -e "$f" ] || continue
  count=$((count + 1))
  if [ ! -f "$f" ]; then
    echo "check: $f is not a file"
    bad=1
    continue
  fi
  lines=$(wc -l < "$f" | tr -d ' ')
  text=$(head -n 1 "$f" | tr -d '[:space:]')
  if [ "$lines" != 1 ] || [ -z "$text" ]; then
    echo "check: $f must be one non-empty line (it has $lines line(s))"
    bad=1
  fi
done
if [ "$count" = 0 ]; then
  echo "check: greetings/ is empty"
  exit 1
fi
[ "$bad" = 0 ] || exit 1
echo "check: ok, $count greetings, each one non-empty line"
