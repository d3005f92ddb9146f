/* An AF_INET6 listener without IPV6_V6ONLY (dual-stack) and an AF_INET
 * client connecting to it over IPv4: the server side shows as tcp6 with an
 * IPv4 peer, the client side as plain tcp.
 *
 *   dualstack-c PORT        serve forever, echo a line per connection
 *   dualstack-c PORT client connect once over 127.0.0.1 and exit
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int serve(int port)
{
	int off = 0, on = 1;
	int s = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port),
				  .sin6_addr = IN6ADDR_ANY_INIT };

	setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 64)) {
		perror("dualstack-c");
		return 1;
	}
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c >= 0) {
			dprintf(c, "hello from an AF_INET6 socket\n");
			close(c);
		}
	}
}

static int client(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	char buf[128];
	ssize_t n;

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
		perror("dualstack-c client");
		return 1;
	}
	n = read(s, buf, sizeof(buf) - 1);
	if (n > 0)
		fwrite(buf, 1, n, stdout);
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 7070;

	return argc > 2 && !strcmp(argv[2], "client") ? client(port) : serve(port);
}
