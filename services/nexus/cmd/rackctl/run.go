package main

import (
	"github.com/oxidecomputer/oxide.go/oxide"
	"github.com/spf13/cobra"
)

// The runners below are every command's shape: check the output format,
// reach the API, call it, print what it answered.

// runObject prints the one object call answers.
func runObject[T any](s *session, cmd *cobra.Command, cols columns[T], call func(*client) ([]byte, error)) error {
	p, c, err := s.start(cmd)
	if err != nil {
		return err
	}
	body, err := call(c)
	if err != nil {
		return err
	}
	return printObject(p, body, cols)
}

// runList prints every item of a listing the SDK reads, all its pages.
func runList[T any](s *session, cmd *cobra.Command, cols columns[T], call func(*oxide.Client) error) error {
	p, c, err := s.start(cmd)
	if err != nil {
		return err
	}
	pages, err := c.viaSDK(call)
	if err != nil {
		return err
	}
	all, err := items(pages)
	if err != nil {
		return err
	}
	return printItems(p, all, cols)
}

// runExtList prints every item of an extension's listing at path.
func runExtList[T any](s *session, cmd *cobra.Command, cols columns[T], path string) error {
	p, c, err := s.start(cmd)
	if err != nil {
		return err
	}
	all, err := c.list(cmd.Context(), path)
	if err != nil {
		return err
	}
	return printItems(p, all, cols)
}

// runDone makes a call the API answers with nothing, and says it is done.
func runDone(s *session, cmd *cobra.Command, done string, call func(*client) error) error {
	p, c, err := s.start(cmd)
	if err != nil {
		return err
	}
	if err := call(c); err != nil {
		return err
	}
	p.say("%s", done)
	return nil
}

// start is the printer and the client of a command, or why there are none.
func (s *session) start(cmd *cobra.Command) (printer, *client, error) {
	p, err := s.printer(cmd)
	if err != nil {
		return printer{}, nil, err
	}
	c, err := s.client()
	return p, c, err
}
