// One POST through Go's default HTTP client, which takes the proxy from HTTPS_PROXY/HTTP_PROXY/NO_PROXY
// (http.ProxyFromEnvironment) and, on Linux, extra CAs from SSL_CERT_FILE. Prints the response body.
//   proxied_call URL BODY
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	response, err := http.Post(os.Args[1], "application/json", strings.NewReader(os.Args[2]))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(body))
}
