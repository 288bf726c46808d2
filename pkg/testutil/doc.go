// Package testutil holds test helpers both services' tests use: polling a
// condition until a deadline instead of sleeping "long enough".
package testutil
