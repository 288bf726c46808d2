package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// The committed document is the generator's output from the committed
// Swagger 2 document: nobody edited it by hand, and tools/generate.sh was
// run after the last change to the proto or the gateway's statuses.
func TestTheCommittedDocumentIsWhatTheGeneratorWrites(t *testing.T) {
	swagger, err := os.ReadFile("../openapi/omicron/nexus/v1/external.swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := convert(swagger)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../openapi/nexus.openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(want, '\n')) {
		t.Fatal("services/nexus/gateway/openapi/nexus.openapi.json is not what openapi3gen writes: run tools/generate.sh")
	}
}
