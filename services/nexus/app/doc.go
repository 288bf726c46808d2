// Package app is nexus's application layer: what the API handlers call.
// Each noun has its file (sled.go, vmm.go, …); authorization and validation
// happen here, all persistence through the datastore.
package app
