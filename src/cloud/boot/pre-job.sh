#!/bin/sh
# pre-job.sh: the job-started hook of the github-runner charm's runners
# (ACTIONS_RUNNER_HOOK_JOB_STARTED names it). GitHub's runner application
# runs it as the runner user before each job, with the job's variables
# (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, ...), and prints what it prints in
# the job's "Set up runner" log; a non-zero exit fails the job unrun.
#
# 1. With GITHUB_RUNNER_ALLOW_EXTERNAL_CONTRIBUTOR=false (the charm's
#    allow-external-contributor option), the job of a pull_request,
#    pull_request_target, pull_request_review, pull_request_review_comment
#    or issue_comment event fails unless its author is the repository's
#    OWNER, MEMBER or COLLABORATOR (or CONTRIBUTOR, on a private
#    repository). A pull request from a branch of the repository itself is
#    not checked. As the Python charm's pre-job.
# 2. The operator's pre-job-script, if any, runs; its failure is logged and
#    the job goes on.
#
# POSIX sh with awk and sed, as every Ubuntu and Debian image has them (and
# busybox): the event is read by a JSON reader in awk, so no python3 or jq
# is needed.

# The runner runs hooks with "bash -e" (or "sh -e"): this script handles
# its failures itself.
set +e

operator_script=/etc/github-runner/pre-job-script
allowed_event_authors='OWNER MEMBER COLLABORATOR'

say() { printf '%s\n' "$*"; }

# event_values PATH... prints "PATH=VALUE" for each of the event's values at
# the dotted PATHs (pull_request.head.repo.full_name; array items are
# numbered from 0), strings unquoted (escapes kept: the values read here,
# names and enums, have none), numbers and true/false/null as they are. A
# path that is not in the event, or whose value is an object or an array,
# prints nothing; of a path that is there twice, the first value counts.
event_values() {
	# Line by line (a JSON string holds no line break), each line split at
	# its quotes: the pieces between strings are the structure, read a
	# character at a time; strings are taken whole. Linear in the payload,
	# even for busybox's awk on a pull request with a long body.
	awk -v want="$*" '
	BEGIN {
		n = split(want, w, " ")
		for (k = 1; k <= n; k++) wanted[w[k]] = 1
		depth = 0
	}
	function path(   p, k) {
		p = key[1]
		for (k = 2; k <= depth; k++) p = p "." key[k]
		return p
	}
	function emit(value,   p) {
		if (depth == 0) return
		p = path()
		if (p in wanted && !(p in seen)) {
			seen[p] = 1
			print p "=" value
		}
	}
	# structure reads a piece of the line between two strings.
	function structure(piece,   j, len, c, literal) {
		len = length(piece)
		literal = ""
		for (j = 1; j <= len; j++) {
			c = substr(piece, j, 1)
			if (c ~ /[][{},: \t\r]/) {
				if (literal != "") {
					emit(literal)
					literal = ""
				}
				if (c == "{" || c == "[") {
					depth++
					type[depth] = c
					key[depth] = (c == "[") ? 0 : ""
					expect_key = (c == "{")
				} else if (c == "}" || c == "]") {
					depth--
				} else if (c == ",") {
					if (type[depth] == "[") key[depth]++
					else expect_key = 1
				} else if (c == ":") {
					expect_key = 0
				}
			} else {
				literal = literal c # a number, true, false or null
			}
		}
		if (literal != "") emit(literal)
	}
	# A string: a key, or a value. Escapes are kept; a long one (a body)
	# is no value read here, and is not kept whole.
	function string(value) {
		if (type[depth] == "{" && expect_key) key[depth] = value
		else emit(value)
	}
	{
		n = split($0, piece, "\"")
		k = 1
		while (k <= n) {
			structure(piece[k])
			if (++k > n) break
			value = piece[k]
			# A quote after an odd run of backslashes is in the string.
			while (k < n && match(piece[k], /\\+$/) && RLENGTH % 2 == 1) {
				k++
				if (length(value) < 1024) value = value "\"" piece[k]
			}
			string(value)
			k++
		}
	}' "$GITHUB_EVENT_PATH"
}

# value_of PATH prints PATH's value from $values (event_values' output).
value_of() {
	printf '%s\n' "$values" | while IFS= read -r line; do
		case $line in
		"$1="*)
			printf '%s\n' "${line#"$1="}"
			break
			;;
		esac
	done
}

# check_author fails (1) the job of an event an external contributor may
# have triggered, unless its author may run jobs here.
check_author() {
	event=${GITHUB_EVENT_NAME:-}
	case $event in
	pull_request | pull_request_target | pull_request_review | pull_request_review_comment | issue_comment) ;;
	*)
		say "Contributor check skipped for event: ${event:-none}"
		return 0
		;;
	esac
	if [ -z "${GITHUB_EVENT_PATH:-}" ] || [ ! -r "$GITHUB_EVENT_PATH" ]; then
		say "::error::This runner does not run ${event} jobs it cannot check: the event payload (GITHUB_EVENT_PATH) is missing."
		return 1
	fi
	values=$(event_values repository.private repository.full_name pull_request.head.repo.full_name pull_request.base.repo.full_name \
		pull_request.author_association review.author_association comment.author_association)
	repository=$(value_of repository.full_name)
	allowed=$allowed_event_authors
	if [ "$(value_of repository.private)" = true ]; then
		allowed="$allowed CONTRIBUTOR"
	fi
	case $event in
	issue_comment) association=$(value_of comment.author_association) ;;
	*)
		head=$(value_of pull_request.head.repo.full_name)
		base=$(value_of pull_request.base.repo.full_name)
		if [ -n "$head" ] && [ "$head" = "$base" ]; then
			say "Contributor check skipped: the pull request is from a branch of $base itself"
			return 0
		fi
		case $event in
		pull_request | pull_request_target) association=$(value_of pull_request.author_association) ;;
		pull_request_review) association=$(value_of review.author_association) ;;
		pull_request_review_comment) association=$(value_of comment.author_association) ;;
		esac
		;;
	esac
	for author in $allowed; do
		if [ "$association" = "$author" ]; then
			say "Contributor check passed: the author of the $event event is $association of ${repository:-the repository}"
			return 0
		fi
	done
	say "::error::This runner does not run jobs of $event events from external contributors: the author's association with ${repository:-the repository} is ${association:-unknown}, and only $(printf '%s' "$allowed" | sed 's/ /, /g') may run them here (allow-external-contributor is false)."
	return 1
}

if [ "${GITHUB_RUNNER_ALLOW_EXTERNAL_CONTRIBUTOR:-true}" = false ]; then
	check_author || exit 1
fi

if [ -x "$operator_script" ]; then
	say "Running the runner's pre-job script"
	"$operator_script"
	code=$?
	if [ "$code" -ne 0 ]; then
		say "::warning::The runner's pre-job script failed (exit status $code); the job goes on."
	fi
fi
exit 0
