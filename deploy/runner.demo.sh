#!/bin/sh
# The runner of `agentcom-hub demo`'s three agents: a stand-in for a coding
# agent, small enough to read in a minute, doing real git work on the
# demo's example project ("hello": a greetings/ folder of one-line files).
# The demo writes it into its data dir and points every sidecar at it.
#
# The sidecar runs it in the agent's clone (AGENTCOM_REPO_DIR), on the
# task's fresh branch, with the task as JSON in AGENTCOM_TASK_FILE. Like
# any runner (see deploy/runner.example.sh) it commits on that branch,
# writes its result to AGENTCOM_RESULT_FILE and exits 0; it never pushes
# (the sidecar does) and leaves the work tree clean.
#
# A work task: the task's metadata names a file and a line of text,
# {"file": "greetings/french.txt", "text": "Bonjour, le monde !"}; it
# writes that line to that file and commits it. (Without them, a title
# "Say hello in Dutch" writes greetings/dutch.txt; anything else is done
# with no changes.) The hub then measures the change, has another agent
# review it, runs the project's check on the merge and moves main.
#
# A review task (kind "review", made by the hub): its metadata names the
# change's branch, base and head. It fetches the branch, reads every file
# the change touched and approves when each is one non-empty line, else
# asks for changes: {"verdict": "approve" | "request_changes", "notes": ...}.
#
# It takes its time (AGENTCOM_DEMO_PACE_S, 2 seconds by default) so a
# person watching the dashboard sees each task working; a real agent
# spends that time thinking.
set -eu

task=$AGENTCOM_TASK_FILE
pace=${AGENTCOM_DEMO_PACE_S:-2}

# The task file is pretty-printed JSON: the task's own fields are indented
# two spaces, its metadata's four. A real runner reads it with a JSON
# parser (jq, python); sed keeps this one free of dependencies.
field() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" "$task" | head -n 1; }
meta() { sed -n "s/^    \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" "$task" | head -n 1; }
# Text fit to go between the quotes of a JSON string.
quoted() { printf '%s' "$1" | tr -d '"\\' | tr '\n\t' '  '; }
result() { printf '%s\n' "$1" > "$AGENTCOM_RESULT_FILE"; }

if [ "$(field kind)" = review ]; then
  branch=$(meta branch)
  base=$(meta base)
  head=$(meta head)
  sleep "$pace"
  git fetch --quiet origin "refs/heads/$branch"
  verdict=approve
  notes=""
  for f in $(git diff --name-only "$base" "$head"); do
    if ! git cat-file -e "$head:$f" 2>/dev/null; then
      verdict=request_changes
      notes="$notes$f is deleted; "
      continue
    fi
    lines=$(git show "$head:$f" | wc -l | tr -d ' ')
    text=$(git show "$head:$f" | head -n 1)
    if [ "$lines" = 1 ] && [ -n "$(printf '%s' "$text" | tr -d '[:space:]')" ]; then
      notes="$notes$f says '$(quoted "$text")'; "
    else
      verdict=request_changes
      notes="$notes$f must be one non-empty line, not $lines; "
    fi
  done
  result "{\"verdict\": \"$verdict\", \"notes\": \"$(quoted "${notes%; }")\"}"
  exit 0
fi

title=$(field title)
file=$(meta file)
text=$(meta text)
if [ -z "$file" ]; then
  # "Say hello in Dutch" → greetings/dutch.txt, for tasks typed by hand.
  language=$(printf '%s' "$title" | sed -n 's/^Say hello in \(.*\)$/\1/p')
  slug=$(printf '%s' "$language" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9-')
  if [ -z "$slug" ]; then
    result "{\"summary\": \"nothing to do: this runner writes greetings (metadata file and text, or a title 'Say hello in ...')\"}"
    exit 0
  fi
  file="greetings/$slug.txt"
  text="Hello from the $language task (written by $AGENTCOM_AGENT_ID)!"
fi
case $file in
  greetings/*/* | *..* | greetings/) echo "refusing $file: one file right in greetings/" >&2; exit 1 ;;
  greetings/*) ;;
  *) echo "refusing $file: greetings live in greetings/" >&2; exit 1 ;;
esac

sleep "$pace"
mkdir -p greetings
printf '%s\n' "$text" > "$file"
git add -- "$file"
if git diff --cached --quiet; then
  result "{\"summary\": \"$(quoted "$file") already says that\"}"
  exit 0
fi
git commit --quiet -m "$title" \
  -m "AgentCom task $AGENTCOM_TASK_ID, generation $AGENTCOM_GENERATION, by $AGENTCOM_AGENT_ID."
result "{\"summary\": \"wrote $(quoted "$file"): $(quoted "$text")\"}"
