package model

import (
	"time"

	"github.com/google/uuid"
)

// Project groups instances.
type Project struct {
	ID           uuid.UUID
	Name         string
	Description  string
	TimeCreated  time.Time
	TimeModified time.Time
}
