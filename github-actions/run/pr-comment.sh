#!/usr/bin/env bash
# Keep one pull request comment per model up to date: legion-ci renders the body, whose first
# line is a hidden marker; the comment whose first line is that marker is edited, otherwise a
# new one is posted. Inputs arrive only as environment variables: GH_TOKEN, PIPELINE_FILE,
# RUN_ID, PR_NUMBER, REPOSITORY (and the runner's GITHUB_SERVER_URL).
set -euo pipefail
# On GitHub Enterprise Server, gh talks to this server's API with the same token.
server="${GITHUB_SERVER_URL:-https://github.com}"
server="${server#https://}"
if [ "${server%/}" != "github.com" ]; then
  export GH_HOST="${server%/}" GH_ENTERPRISE_TOKEN="$GH_TOKEN"
fi
body="$(mktemp)"
trap 'rm -f "$body"' EXIT
for name in PIPELINE_FILE RUN_ID; do
  if [[ "${!name}" == *[[:cntrl:]]* ]]; then
    echo "::warning title=legion-ci::the $name input holds a control character; no pull request comment"
    exit 0
  fi
done
legion-ci report pr-comment "--run-id=$RUN_ID" -- "$PIPELINE_FILE" >"$body"
marker="$(head -n 1 "$body")"
# A comment that cannot be posted (a pull request from a fork gets a read-only token) is a
# warning: the model's pipeline did not fail.
cannot_post() {
  echo "::warning title=legion-ci::the pull request comment could not be posted or updated (a pull request from a fork has a read-only token)"
  exit 0
}
listing="$(gh api --paginate "repos/$REPOSITORY/issues/$PR_NUMBER/comments" \
  --jq '.[] | [.id, (.body | split("\n") | .[0])] | @tsv')" || cannot_post
comment_id=""
while IFS=$'\t' read -r id first_line; do
  if [ "$first_line" = "$marker" ]; then
    comment_id="$id"
    break
  fi
done <<<"$listing"
if [ -n "$comment_id" ]; then
  gh api --method PATCH "repos/$REPOSITORY/issues/comments/$comment_id" -F "body=@$body" \
    >/dev/null || cannot_post
  echo "updated pull request comment $comment_id"
else
  gh api --method POST "repos/$REPOSITORY/issues/$PR_NUMBER/comments" -F "body=@$body" \
    >/dev/null || cannot_post
  echo "posted a pull request comment"
fi
