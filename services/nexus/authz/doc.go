// Package authz decides what an authenticated caller may do (SPEC N10).
//
// Roles: a fleet admin may do everything; a project collaborator may read
// its project and operate the project's instances; a project viewer may
// only read its project. Creating and deleting projects and reading the
// system API (sleds) need a fleet admin.
//
// Tokens are opaque bearer secrets; only their SHA-256 is stored, so a
// database leak does not leak usable tokens.
package authz
