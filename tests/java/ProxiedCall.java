// One POST through the JDK's own HTTP client, configured the standard way: the proxy from the
// https.proxyHost/https.proxyPort system properties (the default ProxySelector reads them), the CA from
// javax.net.ssl.trustStore, and the proxy credentials from an Authenticator, since the JDK reads no
// property for them. Run: java [properties] ProxiedCall.java URL BODY
import java.net.Authenticator;
import java.net.PasswordAuthentication;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class ProxiedCall {
    public static void main(String[] args) throws Exception {
        Authenticator proxyCredentials = new Authenticator() {
            @Override
            protected PasswordAuthentication getPasswordAuthentication() {
                if (getRequestorType() != RequestorType.PROXY) {
                    return null;
                }
                return new PasswordAuthentication(
                    System.getProperty("https.proxyUser"),
                    System.getProperty("https.proxyPassword").toCharArray());
            }
        };
        HttpClient client = HttpClient.newBuilder().authenticator(proxyCredentials).build();
        HttpRequest request = HttpRequest.newBuilder(URI.create(args[0]))
            .header("content-type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(args[1]))
            .build();
        HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
        System.out.println(response.body());
    }
}
