// Package deploy has no code of its own: its tests check the repository's deployment files
// (deploy/Dockerfile, docker-compose.yml, deploy/k8s, deploy/k8s-gpu) with the parsers of the tools
// that read them, and against the binaries those files run.
//
// It is a module of its own so that those parsers (compose-go, buildkit's Dockerfile parser,
// k8s.io/api, kustomize) stay out of the main module's dependencies and test build. It imports
// nothing from the main module: the tests build its binaries the way the Dockerfile does and run
// them. scripts/test.sh runs these tests.
package deploy
