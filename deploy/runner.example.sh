#!/bin/sh
# An example runner for AgentCom's exec mode, on a repository task.
#
# The sidecar starts it in AGENTCOM_REPO_DIR, on the branch AGENTCOM_BRANCH
# (made from the freshly fetched main, for this attempt), with the task as
# JSON in AGENTCOM_TASK_FILE. A runner's job: do the work, commit it on
# that branch, write a result, exit 0. It must not push (the sidecar does,
# once the runner succeeds), switch branches or touch main, and it should
# leave the work tree clean.
#
# This one does a token piece of work so the whole path can be seen: it
# appends a line naming the task to AGENTCOM-LOG.md (or
# $AGENTCOM_EXAMPLE_FILE) and commits it. A real runner hands the task file
# to the agent here instead.
set -eu

cd "$AGENTCOM_REPO_DIR"
branch=$(git symbolic-ref --quiet --short HEAD || true)
if [ "$branch" != "$AGENTCOM_BRANCH" ]; then
  echo "expected to be on $AGENTCOM_BRANCH, not ${branch:-a detached HEAD}" >&2
  exit 1
fi

# The task file is pretty-printed JSON; a real runner reads it with a JSON
# parser. "dossier" lists what earlier attempts of the task did and how
# they ended (each with an "outcome"): a retry starts again from main, so
# that is where to learn from them.
title=$(sed -n 's/^  "title": "\(.*\)",\{0,1\}$/\1/p' "$AGENTCOM_TASK_FILE" | head -n 1)
title=${title:-task $AGENTCOM_TASK_ID}
earlier=$(grep -c '"outcome":' "$AGENTCOM_TASK_FILE" || true)

file=${AGENTCOM_EXAMPLE_FILE:-AGENTCOM-LOG.md}
printf -- '- %s: %s (generation %s, agent %s, %s earlier attempt(s))\n' \
  "$AGENTCOM_TASK_ID" "$title" "$AGENTCOM_GENERATION" "$AGENTCOM_AGENT_ID" "$earlier" >> "$file"
git add -- "$file"
git commit --quiet -m "$title" -m "AgentCom task $AGENTCOM_TASK_ID, generation $AGENTCOM_GENERATION."

# The result: any JSON object (or plain text, taken as the summary). The
# sidecar adds branch, base and head once it has pushed the branch.
printf '{"summary": "appended a line to %s"}\n' "$file" > "$AGENTCOM_RESULT_FILE"
