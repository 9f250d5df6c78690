// Command echo-server is the test cluster's workload: every HTTP request is
// answered with who served it and who asked, so a test can tell which Pod a
// load balancer chose and what client address reached it. A PROXY protocol v2
// header, when a connection starts with one, is parsed and its source
// reported beside the TCP peer. UDP datagrams on the same port are echoed with
// the same fields.
//
// Usage: echo-server [--listen :8080]
//
//	echo-server get URL [TIMEOUT]   (a client: prints the body, exit 1 on failure)
//
// The client is here because the images have no other one that works:
// Debian's static busybox crashes in wget.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

var proxyV2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "get" {
		os.Exit(get(os.Args[2:]))
	}
	listen := flag.String("listen", ":8080", "TCP (HTTP) and UDP address to serve on")
	flag.Parse()
	pod, _ := os.Hostname()
	node := os.Getenv("NODE_NAME")

	go serveUDP(*listen, pod, node)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("echo-server: listening on %s: %v", *listen, err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn := r.Context().Value(connKey{}).(*proxiedConn)
		if r.URL.Path == "/healthz" {
			fmt.Fprintln(w, "ok")
			return
		}
		fmt.Fprintf(w, "pod=%s node=%s client=%s proxy-source=%s\n",
			pod, node, conn.Conn.RemoteAddr(), conn.proxySource)
	})
	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c.(*proxiedConn))
		},
	}
	log.Printf("echo-server: pod %s serving on %s", pod, *listen)
	log.Fatal(server.Serve(&proxyListener{ln}))
}

func serveUDP(addr, pod, node string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		log.Fatalf("echo-server: listening on udp %s: %v", addr, err)
	}
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatalf("echo-server: udp: %v", err)
		}
		reply := fmt.Sprintf("pod=%s node=%s client=%s data=%s\n", pod, node, from,
			strings.TrimSpace(string(buf[:n])))
		_, _ = pc.WriteTo([]byte(reply), from)
	}
}

// proxyListener hands out connections whose first bytes were checked for a
// PROXY protocol v2 header.
type proxyListener struct{ net.Listener }

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newProxiedConn(c), nil
}

type connKey struct{}

type proxiedConn struct {
	net.Conn
	reader      *bufio.Reader
	proxySource string
}

func newProxiedConn(c net.Conn) *proxiedConn {
	pc := &proxiedConn{Conn: c, reader: bufio.NewReader(c), proxySource: "-"}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if head, err := pc.reader.Peek(len(proxyV2Signature)); err == nil && bytes.Equal(head, proxyV2Signature) {
		pc.proxySource = readProxyV2(pc.reader)
	}
	_ = c.SetReadDeadline(time.Time{})
	return pc
}

func (c *proxiedConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

// readProxyV2 consumes a PROXY v2 header and returns its source address, or
// a word saying why there is none.
func readProxyV2(r *bufio.Reader) string {
	header := make([]byte, 16)
	if _, err := io.ReadFull(r, header); err != nil {
		return "truncated"
	}
	length := int(binary.BigEndian.Uint16(header[14:16]))
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return "truncated"
	}
	if header[12]&0x0f == 0 { // LOCAL command: the proxy's own connection
		return "local"
	}
	switch header[13] >> 4 {
	case 1: // AF_INET
		if len(body) < 12 {
			return "truncated"
		}
		return net.JoinHostPort(net.IP(body[0:4]).String(), fmt.Sprint(binary.BigEndian.Uint16(body[8:10])))
	case 2: // AF_INET6
		if len(body) < 36 {
			return "truncated"
		}
		return net.JoinHostPort(net.IP(body[0:16]).String(), fmt.Sprint(binary.BigEndian.Uint16(body[32:34])))
	}
	return "unspec"
}

func get(args []string) int {
	timeout := 5 * time.Second
	if len(args) > 1 {
		if d, err := time.ParseDuration(args[1]); err == nil {
			timeout = d
		}
	}
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-server get: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "echo-server get: %s\n", resp.Status)
		return 1
	}
	return 0
}
