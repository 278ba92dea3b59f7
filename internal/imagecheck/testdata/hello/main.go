// Command hello is the binary the imagecheck tests put into images: any Go
// program will do, cross-built for each platform.
package main

import "fmt"

func main() { fmt.Println("hello") }
