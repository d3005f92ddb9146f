// A server as Java writes it by default: new ServerSocket(port) opens an
// AF_INET6 socket without IPV6_V6ONLY (unless -Djava.net.preferIPv4Stack=true),
// so its IPv4 clients appear as tcp6 in netstat/ss.  It keeps every
// connection open for a while, like a backup engine's data channels.
import java.io.InputStream;
import java.net.ServerSocket;
import java.net.Socket;

public class DualStackServer {
    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 4243;
        try (ServerSocket server = new ServerSocket(port)) {
            while (true) {
                Socket s = server.accept();
                new Thread(() -> {
                    try (Socket c = s; InputStream in = c.getInputStream()) {
                        while (in.read() != -1) { }
                    } catch (Exception e) { }
                }).start();
            }
        }
    }
}
