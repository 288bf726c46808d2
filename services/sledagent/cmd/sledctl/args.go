package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	sledagentv1 "github.com/rackplane/rackplane/pkg/api/omicron/sledagent/v1"
	"github.com/rackplane/rackplane/pkg/apierror"
)

// parseID checks an id the operator typed the way the sled would, so a
// typo is refused before anything is dialled, naming the field.
func parseID(field, s string) (string, error) {
	var v apierror.Violations
	id := v.UUID(field, s)
	if err := v.Err(); err != nil {
		return "", fieldError(err)
	}
	return id.String(), nil
}

// fieldError renders a validation error as "field: problem" lines.
func fieldError(err error) error {
	var lines []string
	for _, v := range apierror.FieldViolations(err) {
		lines = append(lines, v.Field+": "+v.Description)
	}
	return errors.New(strings.Join(lines, "\n"))
}

// parseDuration reads a duration argument or flag such as "250ms".
func parseDuration(field, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration such as 250ms or 2s", field, s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s: %s must not be negative", field, s)
	}
	return d, nil
}

// vmmRef is a VMM a command acts on; instance is empty when the operator
// named the VMM itself.
type vmmRef struct{ id, instance string }

func (r vmmRef) String() string {
	if r.instance == "" {
		return "VMM " + r.id
	}
	return "VMM " + r.id + " of instance " + r.instance
}

// vmmSelection is how a command names VMMs: VMM_ID, or --instance for the
// VMMs this sled runs of that instance.
type vmmSelection struct {
	instanceFlag string
	vmm          string // parsed VMM_ID
	instance     string // parsed --instance
}

func (s *vmmSelection) addFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.instanceFlag, "instance", "", "act on the VMM this sled runs of this instance, instead of VMM_ID")
}

// parse checks the selection before anything is dialled. Naming no VMM
// means every VMM, unless the command requires one: then orElse says what
// to give instead.
func (s *vmmSelection) parse(args []string, orElse string) (err error) {
	switch {
	case len(args) > 0 && s.instanceFlag != "":
		return errors.New("give VMM_ID or --instance, not both")
	case len(args) > 0:
		s.vmm, err = parseID("vmm_id", args[0])
	case s.instanceFlag != "":
		s.instance, err = parseID("--instance", s.instanceFlag)
	case orElse != "":
		return errors.New("give " + orElse)
	}
	return err
}

// any reports whether the selection names no VMM, meaning every VMM.
func (s *vmmSelection) any() bool { return s.vmm == "" && s.instance == "" }

// resolve returns the VMMs selected: an instance's are looked up in the
// sled's inventory, so a wrong sled is a clear error rather than a fault
// set for a VMM that never comes.
func (s *vmmSelection) resolve(ctx context.Context, c clients) ([]vmmRef, error) {
	if s.instance == "" {
		return []vmmRef{{id: s.vmm}}, nil
	}
	inv, err := c.agent.GetInventory(ctx, &sledagentv1.GetInventoryRequest{})
	if err != nil {
		return nil, err
	}
	var refs []vmmRef
	for _, v := range inv.GetVmms() {
		if strings.EqualFold(v.GetInstanceId(), s.instance) {
			refs = append(refs, vmmRef{id: v.GetVmmId(), instance: s.instance})
		}
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("--instance: sled %s runs no VMM of instance %s", inv.GetSledId(), s.instance)
	}
	return refs, nil
}
