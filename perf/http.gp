# perf/http.gp - bar chart of perf/run-http.sh's medians.
#   gnuplot -e "datafile='x.dat'; outfile='x.png'" perf/http.gp
set terminal pngcairo size 900,480 font ",10"
set output outfile
set title "GET of a 6-byte response, keep-alive, loopback, 2 vCPUs shared with wrk (median req/s)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "requests/s"
set yrange [0:*]
set grid ytics
set key top right
set xtics nomirror
plot datafile using 2:xtic(1) title "ecshardd /hello", '' using 3 title "nginx return", '' using 4 title "h2o /hello.txt"
