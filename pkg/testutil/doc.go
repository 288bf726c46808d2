// Package testutil holds test helpers both services' tests use: polling a
// condition until a deadline instead of sleeping "long enough", and TB, the
// part of testing.TB helpers need, with a Standalone implementation for
// commands that build racks outside a test.
package testutil
