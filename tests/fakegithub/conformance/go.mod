// The conformance test lives in a module of its own because kin-openapi's
// dependencies are not in the main module's go.sum; once they are, delete
// this go.mod and go.sum and the test joins the main module unchanged.
module github.com/canonical/github-runner-charm/tests/fakegithub/conformance

go 1.25.0

require (
	github.com/canonical/github-runner-charm v0.0.0-00010101000000-000000000000
	github.com/getkin/kin-openapi v0.131.0
)

require (
	github.com/go-openapi/jsonpointer v0.21.0 // indirect
	github.com/go-openapi/swag v0.23.0 // indirect
	github.com/gorilla/mux v1.8.1 // indirect
	github.com/josharian/intern v1.0.0 // indirect
	github.com/mailru/easyjson v0.7.7 // indirect
	github.com/mohae/deepcopy v0.0.0-20170929034955-c48cc78d4826 // indirect
	github.com/oasdiff/yaml v0.0.0-20250309154309-f31be36b4037 // indirect
	github.com/oasdiff/yaml3 v0.0.0-20250309153720-d2182401db90 // indirect
	github.com/perimeterx/marshmallow v1.1.5 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace github.com/canonical/github-runner-charm => ../../..
