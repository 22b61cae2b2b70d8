// Package fakegithub is a fake GitHub for tests: the self-hosted runner
// part of GitHub's REST API, a stand-in for GitHub's runner broker, and a
// fake runner application that talks to it. Its responses follow GitHub's
// own API description (testdata/rest-runners.json), which the test in
// ./conformance checks with kin-openapi. That test is a module of its own,
// because kin-openapi's dependencies are not in the main go.sum: run it with
// "cd tests/fakegithub/conformance && go test ./...".
//
// # The API
//
// Served under "/" and under "/api/v3/" (GitHub Enterprise Server style),
// for repositories (/repos/{owner}/{repo}/…) and organisations
// (/orgs/{org}/…): list runners (name filter, per_page ≤ 100, page, Link
// header), get and delete a runner, generate-jitconfig, registration-token,
// remove-token, downloads, the organisation's runner groups, and
// /rate_limit. The endpoint constants (ListRepoRunners, OrgJITConfig…) name
// them for Counts and InjectFault.
//
// GitHub's behaviour is modelled where a client can trip on it: 401 "Bad
// credentials" or "Requires authentication"; 404 for what a token cannot
// see and 403 for what it sees but may not administer (Token.Scope,
// Token.Forbidden); a JIT config creates an offline ephemeral runner at
// once (201); 409 for a name already taken; 422 for deleting a busy runner
// and for invalid JIT requests; 204 for a delete; rate-limit headers on
// every response, counting down per token, with 403 once spent.
//
// # Use in a test
//
//	srv := fakegithub.NewTest(t, fakegithub.Options{})
//	client := github.NewClient(nil).WithAuthToken(fakegithub.DefaultToken)
//	client.BaseURL, _ = url.Parse(srv.URL() + "/")
//
//	srv.AddRunners("canonical/repo", 250, fakegithub.RunnerSpec{Online: true})
//	srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.ListRepoRunners,
//		Kind: fakegithub.ServerError, Status: 502, Times: 2})
//	// … exercise the client …
//	if got := srv.Count(fakegithub.ListRepoRunners); got != 5 {
//		t.Errorf("listed runners with %d requests, want 5", got)
//	}
//
// NewTest starts a Server on loopback for one test. New gives an
// unstarted Server, an http.Handler for httptest or any listener; Start
// serves it on an address such as "0.0.0.0:8080" or an LXD bridge's, and
// URL then returns its base URL. For go-github, use URL()+"/" as BaseURL,
// or WithEnterpriseURLs(URL(), URL()) to go through /api/v3/.
//
// Counts, Count and TotalCount tell how many requests each endpoint got
// (ResetCounts starts again), for tests and benchmarks of a client's
// request budget. InjectFault arms a Fault for one endpoint or all, for a
// burst (Fault.Times) or until ClearFaults: ServerError (5xx),
// PrimaryRateLimit and SecondaryRateLimit (403 or 429, with or without
// Retry-After; one with a RetryAfter lasts that long from its injection,
// telling every caller the same end, and then lifts itself), Forbidden, Latency, DropConnection, EmptyResponse (200 and
// no body, a scale-set broker incident), and OmitBusyRunners (a
// runner list that, like an eventually consistent one, leaves out the
// runners running a job). SetRateLimitRemaining spends a token's budget for
// real. Deletions records every DELETE of a runner with the token that
// asked and the answer, to tell which client deleted what.
//
// # Runners and jobs
//
// A runner's life, as GitHub shows it:
//
//  1. generate-jitconfig (or AddRunner): the runner exists, "offline".
//  2. Its process starts (run.sh --jitconfig, or ConnectRunner): after
//     Options.StatusLag it is "online".
//  3. AssignJob or AssignJobToAny: it is busy.
//  4. The job ends (the process reports it, or CompleteJob): an ephemeral
//     runner is removed by "GitHub"; others go idle. With
//     Options.JobLostTimeout set, a job whose runner process stops renewing
//     it (the process or its machine died) ends Lost after that long, and
//     its runner shows offline and idle, its record left for its owner to
//     delete. Job.Lost tells a job that was killed from one that ran to
//     its end.
//
// WaitRunnersOnline, WaitJob and WaitRunnerGone wait for those steps;
// SetRunnerStatus, SetRunnerBusy and RemoveRunner force a state.
//
// # Runner scale sets
//
// The fake also serves the runner scale-set service, as the client
// github.com/actions/scaleset (v0.4.0) and its listener use it; the test
// in scaleset_test.go drives that client end to end. With the config URL
// URL()+"/<org>" or URL()+"/<owner>/<repo>" (a host that is not
// github.com, so the client calls the API under /api/v3):
//
//   - Bootstrap: POST …/actions/runners/registration-token (the REST
//     endpoint, Bearer PAT), then POST /api/v3/actions/runner-registration
//     with "RemoteAuth <registration token>" and {"url": <config URL>}:
//     201 {url, token}, url the tenant's service, URL()+"/_svc/t<n>/", and
//     token an HS256 JWT with exp (Options.ScaleSetTokenLifetime, default
//     1h). A GitHub App client first mints an installation token: POST
//     /api/v3/app/installations/{id}/access_tokens with the App's JWT
//     (RS256, iss, exp; the signature is not checked) gives 201 and a
//     token that may use every scope.
//   - The service under /_svc/<tenant>/ (api-version ignored, trailing
//     slashes tolerated; 401 without the admin token): runner groups by
//     name (1 "Default", and an organisation's AddRunnerGroup ones); scale
//     sets: create (200), get by name and group, by id, PATCH (non-zero
//     fields), DELETE (204), names unique in a group (409); sessions: one
//     per scale set (a second one 409 RunnerScaleSetSessionConflictException),
//     PATCH refresh (404 for an unknown session), DELETE (204; 400
//     RunnerScaleSetSessionExpiredException for an unknown one), and a
//     session nobody polled for Options.ScaleSetSessionExpiry (default 1m)
//     ends; the session of a deleted scale set is refused 404
//     RunnerScaleSetNotFoundException; acquirejobs; generatejitconfig (an
//     offline ephemeral runner of the scope at once, in the REST list with
//     the scale set's labels and nothing else, the encodedJITConfig in the
//     format of the REST JIT config, so run.sh runs it; 409
//     AgentExistsException for a name taken); agents by id (404
//     AgentNotFoundException) and ?agentName=, DELETE (204, also for a
//     missing one; 400 JobStillRunningException while it has a job).
//     Errors are {"typeName", "message"}, typeName the service's exception
//     name, as the client maps it to its sentinels.
//   - The message queue, messageQueueUrl …/_queue/<session>/message, with
//     the session's token: a long poll of Options.ScaleSetLongPoll
//     (default 2s, GitHub's is 50s), then 202; 401 once the session is
//     gone. Each message carries at most 50 job messages and the
//     statistics of its delivery; one not deleted comes again, same id,
//     until DELETE …/message/<id>; lastMessageId skips what the client
//     saw. X-ScaleSetMaxCapacity is the scale set's capacity.
//
// Jobs: QueueJob(scope, labels, spec) is a workflow job with runs-on
// labels. It goes to a scale set of the scope (an organisation's sets
// serve its repositories) whose labels contain all of them and that has
// room (the capacity of its last poll, minus its unfinished jobs): one with
// an idle online runner first, else the most room. Options.ScaleSetMode
// ScaleSetModeGitHub (the default) assigns it at once (JobAssigned);
// ScaleSetModeGHES offers it (JobAvailable) and assigns it once acquired.
// Statistics count it assigned (totalAssignedJobs = waiting + running)
// until it ends. The first idle online runner of the set whose process
// polls the broker takes it (JobStarted with runnerId and runnerName);
// its end is JobCompleted ("succeeded" or "failed"), and the ephemeral
// runner goes. A job no runner took within Options.ScaleSetAssignTimeout
// (default 5m) is JobCompleted "canceled" (runnerName "") and assigned
// again, up to 3 times; then it ends canceled. A job no scale set can
// take goes to an idle online runner outside scale sets with its labels,
// as AssignJobToAny does, or waits queued until a set or runner can take
// it. Job carries what the messages say: Repository, Workflow, QueuedAt,
// AssignedAt, StartedAt, FinishedAt, Result; WaitJob waits for a queued
// job's end too, WaitJobStarted for a runner to pick it up.
//
// Hooks: ScaleSets(scope) (id, name, labels, runner group, statistics,
// session owner, capacity, messages), ScaleSetMessages(id),
// DeleteScaleSet(id) (GitHub deleting an inactive set: its waiting jobs
// wait for another), ExpireSessions(), ExpireQueueTokens() (the next poll
// answers 401 and the client refreshes its session). A scale-set job whose
// runner is lost (Options.JobLostTimeout) ends "failed". Options.GHESVersion plays a GitHub
// Enterprise Server: "3.8" (before 3.9) has no scale sets,
// runner-registration answers 404; "3.17" (before 3.18) keeps a scale
// set's name as its only label, the others silently dropped. The
// endpoint keys (RunnerRegistration, ScaleSetCreate, ScaleSetMessageGet…,
// all in ScaleSetEndpoints) work with Counts and InjectFault. The HTTP
// controls: POST /_fake/control/jobs/queue, GET
// /_fake/control/jobs/{id}/started, GET /_fake/control/scale-sets,
// DELETE /_fake/control/scale-sets/{id}, POST
// /_fake/control/scale-sets/expire-sessions and POST
// /_fake/control/scale-sets/expire-queue-tokens, with their Remote
// methods.
//
// # The fake runner application
//
// The downloads endpoint offers linux x64 and arm64 tarballs
// (RunnerTarball) laid out like GitHub's: run.sh, config.sh and
// bin/Runner.Listener, shell scripts that need only busybox. "run.sh
// --jitconfig <blob>" writes the blob's .runner and .credentials files,
// opens a session with the fake's broker (the runner turns online), long
// polls for a job, runs its command with sh (renewing the job meanwhile,
// when the fake asks for it), reports its exit code and output, and, being
// ephemeral, exits 0. "config.sh --url <fake>/<scope>
// --token <registration token>" registers a runner the older way.
//
// The encoded_jit_config is base64 JSON like GitHub's: file names
// (.runner, .credentials, .credentials_rsaparams) to base64 contents; the
// .runner settings carry the fake's URL (Options.AdvertiseURL, else the
// API request's host) and .credentials a secret that identifies the runner
// to the broker. DecodeJITConfig reads one.
//
// # Outside the API
//
// Paths under /_fake/ are not GitHub's: the broker the runner application
// talks to (/_fake/broker/…), the release downloads (which redirect, as
// github.com does), and HTTP controls under /_fake/control/ that mirror the
// Server methods for end-to-end tests in another process; Remote is their
// Go client:
//
//	remote := fakegithub.NewRemote(baseURL)
//	remote.WaitRunnersOnline(ctx, "canonical/repo", 3)
//	job, _ := remote.AssignJobToAny(ctx, "canonical/repo", []string{"jammy"},
//		fakegithub.JobSpec{Command: "echo hello", Sleep: time.Second})
//	job, _ = remote.WaitJob(ctx, job.ID)
//
// cmd/fakegithub serves a Server from the command line:
//
//	fakegithub -listen 10.10.0.1:0 -url-file /tmp/fakegithub.url \
//		-token-file tokens -status-lag 5s -runner-version 2.336.0
//
// with -token TOKEN[@SCOPE] (repeatable), -forbidden-token, -advertise-url,
// -rate-limit, -job-lost-timeout, -checksum correct|wrong|missing,
// -ghes-version, -scale-set-mode, -scale-set-long-poll,
// -scale-set-session-expiry, -scale-set-assign-timeout and -debug.
package fakegithub
