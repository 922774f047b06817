// Load one URL in headless Firefox with a fresh profile, over WebDriver BiDi.
// Prints the page's text, or the navigation error (SEC_ERROR_UNKNOWN_ISSUER, ...), and exits
// 0 when the page loaded, 1 when the navigation failed.
import puppeteer from 'puppeteer-core';

const [url, executablePath = '/usr/bin/firefox-esr'] = process.argv.slice(2);
// puppeteer makes a fresh profile in os.tmpdir() for each launch and deletes it on close.
const browser = await puppeteer.launch({ browser: 'firefox', executablePath, headless: true });
let code = 0;
try {
  const page = await browser.newPage();
  try {
    await page.goto(url, { waitUntil: 'load', timeout: 60000 });
    console.log('LOADED');
    console.log(await page.evaluate(() => document.body.innerText));
  } catch (err) {
    console.log('ERROR', err.message);
    code = 1;
  }
} finally {
  await browser.close();
}
process.exit(code);
