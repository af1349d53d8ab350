// Answers whether Cassandra serves CQL: exit 0 when, logged in as USER /
// PASSWORD, `SELECT release_version FROM system.local` returns a row. With
// NEW_USER NEW_PASSWORD it also makes that login role (or resets its
// password). Uses the DataStax driver that cassandra-all ships.
//   java -cp CP CqlProbe.java HOST PORT USER PASSWORD [NEW_USER NEW_PASSWORD]
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.Row;
import com.datastax.driver.core.Session;

public class CqlProbe {
    public static void main(String[] args) {
        try (Cluster cluster = Cluster.builder().addContactPoint(args[0]).withPort(Integer.parseInt(args[1]))
                .withCredentials(args[2], args[3]).withoutJMXReporting().withoutMetrics().build();
             Session session = cluster.connect()) {
            Row row = session.execute("SELECT release_version FROM system.local").one();
            System.out.println("cassandra: CQL answers, release " + row.getString(0));
            if (args.length == 6) {
                // Role names and passwords are CQL literals here: test values only.
                session.execute("CREATE ROLE IF NOT EXISTS " + args[4] + " WITH LOGIN = true AND PASSWORD = '" + args[5] + "'");
                session.execute("ALTER ROLE " + args[4] + " WITH PASSWORD = '" + args[5] + "'");
                System.out.println("cassandra: role " + args[4] + " can log in");
            }
        }
    }
}
