// Command hellocgo links the C library dynamically: the imagecheck tests
// show the check refuses it.
package main

// #include <stdlib.h>
import "C"

func main() { C.abs(-1) }
