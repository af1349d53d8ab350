//! Static tables the simulated population is drawn from: US cities with their
//! coordinates and populations, names, jobs and streets.
//!
//! Small on purpose: enough variety for realistic categorical columns and
//! distances, cheap to sample from on the hot path.

/// A home town: (city, state, zip, latitude, longitude, population).
pub struct City {
    pub name: &'static str,
    pub state: &'static str,
    pub zip: &'static str,
    pub lat: f64,
    pub long: f64,
    pub population: i64,
}

macro_rules! cities {
    ($( ($n:expr, $s:expr, $z:expr, $lat:expr, $long:expr, $pop:expr) ),* $(,)?) => {
        &[ $( City { name: $n, state: $s, zip: $z, lat: $lat, long: $long, population: $pop } ),* ]
    };
}

/// Big cities and small towns across the states, so `city_pop` and distances
/// vary the way they do in the Sparkov data.
pub const CITIES: &[City] = cities![
    ("New York", "NY", "10001", 40.7128, -74.0060, 8_336_817),
    ("Los Angeles", "CA", "90012", 34.0522, -118.2437, 3_979_576),
    ("Chicago", "IL", "60601", 41.8781, -87.6298, 2_693_976),
    ("Houston", "TX", "77002", 29.7604, -95.3698, 2_320_268),
    ("Phoenix", "AZ", "85004", 33.4484, -112.0740, 1_680_992),
    ("Philadelphia", "PA", "19103", 39.9526, -75.1652, 1_584_064),
    ("San Antonio", "TX", "78205", 29.4241, -98.4936, 1_547_253),
    ("San Diego", "CA", "92101", 32.7157, -117.1611, 1_423_851),
    ("Dallas", "TX", "75201", 32.7767, -96.7970, 1_343_573),
    ("Jacksonville", "FL", "32202", 30.3322, -81.6557, 911_507),
    ("Columbus", "OH", "43215", 39.9612, -82.9988, 898_553),
    ("Charlotte", "NC", "28202", 35.2271, -80.8431, 885_708),
    ("Indianapolis", "IN", "46204", 39.7684, -86.1581, 876_384),
    ("Seattle", "WA", "98101", 47.6062, -122.3321, 753_675),
    ("Denver", "CO", "80202", 39.7392, -104.9903, 727_211),
    ("Boston", "MA", "02108", 42.3601, -71.0589, 692_600),
    ("Nashville", "TN", "37203", 36.1627, -86.7816, 670_820),
    ("Detroit", "MI", "48226", 42.3314, -83.0458, 670_031),
    ("Portland", "OR", "97204", 45.5152, -122.6784, 654_741),
    ("Las Vegas", "NV", "89101", 36.1699, -115.1398, 651_319),
    ("Memphis", "TN", "38103", 35.1495, -90.0490, 651_073),
    ("Louisville", "KY", "40202", 38.2527, -85.7585, 617_638),
    ("Baltimore", "MD", "21202", 39.2904, -76.6122, 593_490),
    ("Milwaukee", "WI", "53202", 43.0389, -87.9065, 590_157),
    ("Albuquerque", "NM", "87102", 35.0844, -106.6504, 560_513),
    ("Atlanta", "GA", "30303", 33.7490, -84.3880, 506_811),
    ("Omaha", "NE", "68102", 41.2565, -95.9345, 478_192),
    ("Minneapolis", "MN", "55401", 44.9778, -93.2650, 429_606),
    ("New Orleans", "LA", "70112", 29.9511, -90.0715, 390_144),
    ("Wichita", "KS", "67202", 37.6872, -97.3301, 389_938),
    ("Birmingham", "AL", "35203", 33.5186, -86.8104, 209_403),
    ("Salt Lake City", "UT", "84101", 40.7608, -111.8910, 200_567),
    ("Boise", "ID", "83702", 43.6150, -116.2023, 228_959),
    ("Des Moines", "IA", "50309", 41.5868, -93.6250, 214_237),
    ("Little Rock", "AR", "72201", 34.7465, -92.2896, 197_312),
    ("Jackson", "MS", "39201", 32.2988, -90.1848, 160_628),
    ("Billings", "MT", "59101", 45.7833, -108.5007, 109_577),
    ("Fargo", "ND", "58102", 46.8772, -96.7898, 124_662),
    ("Sioux Falls", "SD", "57104", 43.5446, -96.7311, 181_883),
    ("Cheyenne", "WY", "82001", 41.1400, -104.8202, 64_235),
    ("Burlington", "VT", "05401", 44.4759, -73.2121, 42_819),
    ("Portland", "ME", "04101", 43.6591, -70.2568, 66_215),
    ("Charleston", "WV", "25301", 38.3498, -81.6326, 46_536),
    ("Anchorage", "AK", "99501", 61.2181, -149.9003, 288_000),
    ("Honolulu", "HI", "96813", 21.3069, -157.8583, 345_064),
    ("Fort Washakie", "WY", "82514", 43.0047, -108.8828, 1_750),
    ("Orient", "WA", "99160", 48.8657, -118.1986, 149),
    ("Malad City", "ID", "83252", 42.1766, -112.2508, 2_095),
    ("Elberta", "AL", "36530", 30.4143, -87.5978, 1_888),
    ("Moravian Falls", "NC", "28654", 36.0788, -81.1781, 3_495),
    ("Harrington Park", "NJ", "07640", 40.9832, -73.9792, 4_664),
    ("Grenada", "CA", "96038", 41.6125, -122.5258, 589),
    ("Deer Lodge", "MT", "59722", 46.3956, -112.7301, 3_111),
    ("Tyler", "TX", "75701", 32.3513, -95.3011, 104_798),
    ("Altonah", "UT", "84002", 40.4862, -110.3480, 302),
    ("Key West", "FL", "33040", 24.5551, -81.7800, 24_649),
];

pub const FIRST_NAMES_F: &[&str] = &[
    "Jennifer", "Mary", "Patricia", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
    "Karen", "Nancy", "Lisa", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly", "Emily",
    "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca",
];

pub const FIRST_NAMES_M: &[&str] = &[
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul",
    "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Edward", "Ronald",
];

pub const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
];

pub const JOBS: &[&str] = &[
    "Psychologist, counselling", "Special educational needs teacher", "Nature conservation officer",
    "Patent attorney", "Dance movement psychotherapist", "Transport planner", "Arboriculturist",
    "Designer, multimedia", "Public affairs consultant", "Pathologist", "IT trainer",
    "Systems developer", "Engineer, land", "Systems analyst", "Naval architect", "Surveyor, land/geomatics",
    "Materials engineer", "Exhibition designer", "Film/video editor", "Chartered accountant",
    "Nurse, adult", "Paramedic", "Teacher, primary school", "Civil engineer, contracting",
    "Retail manager", "Farm manager", "Police officer", "Pharmacist", "Social worker", "Architect",
];

pub const STREETS: &[&str] = &[
    "Oak Street", "Maple Avenue", "Cedar Lane", "Pine Road", "Elm Street", "Washington Avenue",
    "Lake View Drive", "Hill Road", "Park Place", "Sunset Boulevard", "River Road", "Church Street",
    "Mill Lane", "Forest Drive", "Meadow Court", "Spring Street", "Highland Avenue", "Jackson Street",
];

pub const MERCHANT_WORDS: &[&str] = &[
    "Kirlin", "Sporer-Keebler", "Haley", "Swaniawski", "Lind-Buckridge", "Kutch", "Keeling-Crist",
    "Stokes", "Heller", "Rippin", "Bashirian", "Schumm", "Kerluke", "Lockman", "Gottlieb",
    "Rau and Sons", "Boyer PLC", "Cormier LLC", "Medhurst", "Kuhn LLC", "Corwin-Collins",
];
